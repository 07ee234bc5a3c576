"""An asyncio transport stand-in for driving a sidecar ``Connection`` in process: it keeps what is written, and
where the connection closed (uvloop still sends what is written in the same callback after close(), so that
counts too)."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    def __init__(self, peer: Any = ("127.0.0.1", 5555)) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.closed_at = -1
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_at = sum(map(len, self.out))

    abort = close

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None
