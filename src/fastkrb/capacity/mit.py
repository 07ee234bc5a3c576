"""The MIT krb5 baseline: its acceptor (gss_accept_sec_context through python-gssapi) in this process.

Shared by `fastkrb bench` and benches/, so the two compare fastkrb with the same MIT call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MitAcceptor", "mit_available"]


def mit_available() -> bool:
    """Whether python-gssapi (and so MIT's libgssapi_krb5) can be imported here."""
    try:
        import gssapi  # noqa: F401
    except ImportError:
        return False
    return True


class MitAcceptor:
    """MIT's gss_accept_sec_context in this process (python-gssapi's raw binding, one call per token).

    Used as a context manager: inside it KRB5_KTNAME names the keytab and KRB5RCACHEDIR a fresh temporary
    directory (under ``workdir`` when given), so MIT's default replay cache (file2, ``krb5_<uid>.rcache2``)
    starts empty; ``rcache="none"`` sets KRB5RCACHETYPE=none (MIT's crypto path only). MIT reads these per
    krb5 context, i.e. per call, so they stay set while accepting.
    """

    def __init__(self, keytab: Path, rcache: str = "dfl", workdir: Path | None = None) -> None:
        self.keytab = keytab
        self.rcache = rcache
        self.workdir = workdir   # where the replay-cache directory goes (default: the system's temp directory)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._saved: dict[str, str | None] = {}
        self.accept: Callable[[bytes], Any] = self._closed

    @staticmethod
    def _closed(token: bytes) -> Any:
        raise RuntimeError("MitAcceptor used outside its with-block")

    def __enter__(self) -> MitAcceptor:
        import gssapi
        import gssapi.raw

        self._tmp = tempfile.TemporaryDirectory(prefix="mit-rcache-", dir=self.workdir)
        env = {"KRB5_KTNAME": f"FILE:{self.keytab}", "KRB5RCACHEDIR": self._tmp.name}
        if self.rcache == "none":
            env["KRB5RCACHETYPE"] = "none"
        self._saved = {k: os.environ.get(k) for k in (*env, "KRB5RCACHETYPE")}
        os.environ.pop("KRB5RCACHETYPE", None)
        os.environ.update(env)
        creds = gssapi.Credentials(usage="accept", store={"keytab": str(self.keytab)})
        raw_accept = gssapi.raw.accept_sec_context

        def accept(token: bytes) -> Any:
            return raw_accept(token, creds)

        self.accept = accept
        return self

    def __exit__(self, *exc: object) -> None:
        self.accept = self._closed
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def rcache_files(self) -> list[str]:
        return sorted(os.listdir(self._tmp.name)) if self._tmp is not None else []
