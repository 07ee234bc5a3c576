"""A key file in service: read at start (a bad file is a configuration error then), re-read when it changes
(``fastkrb.files.file_signature``), written atomically with mode 0600 (``fastkrb.files.replace_file``).

Both key files are JSON, ``{"fastkrb": KIND, "version": 1, "keys": [...]}``, newest key first: the first key
seals or signs, every key opens or verifies. Replicas share one file. A rotation puts a new key first and
keeps the previous one, so what the previous key sealed stays valid for one more period; a key removed from
the file takes everything it sealed with it, on every replica, at its next look at the file.

A file that changes into something that does not parse leaves the keys in service as they were (logged);
a file that disappears does too (to revoke, write a file without the key: never delete it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from fastkrb.errors import ConfigurationError
from fastkrb.files import FileSignature, file_signature, replace_file

__all__ = ["KeyFileError", "KeyRing", "check_kid", "dump_key_file", "read_key_file", "write_key_file"]

log = logging.getLogger("fastkrb")

K = TypeVar("K")

_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class KeyFileError(ConfigurationError):
    """A key file that cannot be used: missing, unreadable, not the expected JSON, a bad key, no key at all."""

    default_fix = ("Write the file with `fastkrb keys session new FILE` (or `keys signing new FILE`) and give every "
                   "replica the same one.")


def check_kid(kid: Any, where: str) -> str:
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise KeyFileError(f"{where}: key id {kid!r} is not 1-64 characters of A-Z, a-z, 0-9, '-' and '_'.")
    return kid


def read_key_file(data: bytes, kind: str, where: str) -> list[dict[str, Any]]:
    """The ``keys`` entries of a key file of ``kind``, each a dict with a ``kid`` checked for form and
    uniqueness; the caller parses the rest of each entry."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{where} is not JSON ({exc}).") from None
    if not isinstance(doc, dict) or doc.get("fastkrb") != kind:
        raise KeyFileError(f"{where} is not a fastkrb {kind} file (no \"fastkrb\": \"{kind}\" at its top).")
    if doc.get("version") != 1:
        raise KeyFileError(f"{where} has version {doc.get('version')!r}; this fastkrb reads version 1.",
                           "Write the file with this version of fastkrb.")
    keys = doc.get("keys")
    if not isinstance(keys, list) or not keys:
        raise KeyFileError(f"{where} lists no keys.")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(keys):
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where}: key #{i} is not an object.")
        kid = check_kid(entry.get("kid"), f"{where}: key #{i}")
        if kid in seen:
            raise KeyFileError(f"{where}: key id {kid!r} is listed twice.")
        seen.add(kid)
        created = entry.get("created", 0)
        if not isinstance(created, int) or isinstance(created, bool) or created < 0:
            raise KeyFileError(f"{where}: key {kid!r}: \"created\" must be Unix seconds, not {created!r}.")
        out.append(entry)
    return out


def dump_key_file(kind: str, entries: Sequence[dict[str, Any]]) -> bytes:
    return (json.dumps({"fastkrb": kind, "version": 1, "keys": list(entries)}, indent=2) + "\n").encode()


def write_key_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file atomically with mode 0600 (secret keys), keeping its owner."""
    replace_file(path, data, mode=0o600, keep_owner=True, prefix=".fastkrb-keys-")


class KeyRing(Generic[K]):
    """The keys in service, from a file (re-read at most every ``reload_interval`` seconds when it changed;
    0: looked at on every use) or given directly (``path`` None). Thread-safe; ``keys()`` is cheap."""

    def __init__(self, parse: Callable[[bytes, str], tuple[K, ...]], *, path: str | os.PathLike[str] | None = None,
                 keys: Sequence[K] = (), reload_interval: float = 1.0) -> None:
        self._parse = parse
        self.path = os.fspath(path) if path is not None else None
        self.reload_interval = float(reload_interval)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._sig: FileSignature | None = None
        if self.path is None:
            if not keys:
                raise KeyFileError("No keys given (neither a key file nor keys).")
            self._keys: tuple[K, ...] = tuple(keys)
            return
        sig = file_signature(self.path)
        self._keys = self._read(self.path)
        self._sig = sig
        self._next_check = time.monotonic() + self.reload_interval

    def _read(self, path: str) -> tuple[K, ...]:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except OSError as exc:
            raise KeyFileError(f"Key file {path} cannot be read ({exc.strerror or exc}).") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("fastkrb: key file %s is readable by others than its owner (mode %o): whoever reads it can "
                        "forge sessions; chmod 600 it", path, st.st_mode & 0o777)
        return self._parse(data, path)

    def keys(self) -> tuple[K, ...]:
        """The keys in service, newest (sealing, signing) first."""
        if self.path is not None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self.reload_interval
                self.check_file()
        return self._keys

    def check_file(self) -> bool:
        """Re-read the file when its signature changed; True when new keys are in service."""
        if self.path is None:
            return False
        sig = file_signature(self.path)
        if sig is None or sig == self._sig:
            return False
        if not self._lock.acquire(blocking=False):
            return False   # another thread is reading it now
        try:
            try:
                keys = self._read(self.path)
            except ConfigurationError as exc:
                if self.error != exc.cause:
                    log.error("fastkrb: %s Keeping the %d keys in service.", exc.cause, len(self._keys))
                self.error = exc.cause
                return False
            self._keys = keys
            self._sig = sig
            self.error = None
            return True
        finally:
            self._lock.release()
