"""The uvloop floor of the sidecar's HTTP benchmark: a uvloop server on a Unix socket that answers every request
head ("\\r\\n\\r\\n"-terminated, no body) with a fixed response, doing nothing else: what the event loop and the
kernel cost per request, before any parsing, validation or logging. Run by benches/bench_sidecar.py
(scenario floor-uvloop-http).

    python benches/floor/uvloop_floor.py SOCKET RESPONSE_BYTES
"""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop


class Floor(asyncio.Protocol):
    response = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        data = self.tail + data if self.tail else data
        n = data.count(b"\r\n\r\n")
        cut = data.rfind(b"\r\n\r\n")
        self.tail = data[cut + 4:] if cut >= 0 else data
        if n:
            self.t.write(self.response * n)


async def main(path: str, size: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
    Floor.response = head + b"x" * (size - len(head) - 4) + b"\r\n\r\n"
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.get_running_loop().create_unix_server(Floor, path, backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
