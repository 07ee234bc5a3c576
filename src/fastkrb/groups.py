"""Group names for SIDs: the map ``fastkrb groups sync`` writes, loaded and reloaded when its file changes.

A ticket's PAC carries group *SIDs*, never names. People write policies with names (``CORP\\api-readers``)
and read headers with names; this map is the bridge. It is a JSON file (UTF-8):

.. code-block:: json

    {"format": "fastkrb-groups/1", "generated": "2026-12-06T12:00:00Z", "source": "ldap://dc1.corp.example",
     "domain": "CORP", "groups": {"S-1-5-21-1004336348-1177238915-682003330-1104": "CORP\\\\api-readers"}}

Only ``groups`` is read (the rest is provenance); a hand-written file may be that object alone
(``{"S-1-5-...": "CORP\\\\api-readers"}``). Names are ``DOMAIN\\name`` or ``name``; they are matched
case-insensitively (as Windows does), either in full or by the part after the backslash, which must then
name one group only. A name may not contain a comma or a control character (``X-Remote-Groups`` is a
comma-separated list); AD's sAMAccountName cannot contain a comma either.

Reloading works like the keytab's: :meth:`GroupNames.maybe_reload` looks at the file (inode, size, times)
at most every ``reload_interval`` seconds and reads it again when it changed; a file that does not parse
is refused (logged, ``error`` set) and the previous map stays in service. Every successful (re)load bumps
``generation``, which a :class:`~fastkrb.policy.Policy` compares to resolve its names again. Write new maps
with :func:`write_map` (temporary file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from fastkrb.files import file_signature, replace_file

__all__ = ["FORMAT", "GroupNames", "GroupNameError", "check_group_name", "check_sid", "is_sid", "parse_map",
           "read_map", "write_map"]

log = logging.getLogger("fastkrb")

FORMAT = "fastkrb-groups/1"
_SID = re.compile(r"S-1-(\d{1,15})((?:-\d{1,10}){0,15})")
_RETRIES = 3   # reads of one unchanged, refused file before waiting for its next change


class GroupNameError(ValueError):
    """A map file that cannot be used, or a name that resolves to no group or to several."""


def is_sid(s: str) -> bool:
    """``S-1-<authority>-<sub>...``: authority below 2**48, at most 15 sub-authorities below 2**32."""
    m = _SID.fullmatch(s)
    if m is None or int(m.group(1)) >= 1 << 48:
        return False
    return all(int(x) < 1 << 32 for x in m.group(2).split("-")[1:])


def check_sid(s: str) -> str:
    if not isinstance(s, str) or not is_sid(s):
        raise GroupNameError(f"not a SID: {s!r} (want S-1-5-21-...-RID)")
    return s


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GroupNameError(f"empty group name: {name!r}")
    if len(name) > 512 or "," in name or not name.isprintable() or name.count("\\") > 1:
        raise GroupNameError(f"group name {name!r}: at most 512 printable characters, no comma, at most one "
                             "backslash (DOMAIN\\name)")
    return name


def _short(name: str) -> str:
    return name.rpartition("\\")[2]


class _Tables:
    """One consistent snapshot of the map: swapped whole on reload, so readers never see half of one."""

    __slots__ = ("by_full", "by_short", "by_sid")

    def __init__(self, groups: Mapping[str, str]) -> None:
        self.by_sid: dict[str, str] = {}
        self.by_full: dict[str, list[str]] = {}
        self.by_short: dict[str, list[str]] = {}
        for sid, name in groups.items():
            check_sid(sid)
            check_group_name(name)
            self.by_sid[sid] = name
            self.by_full.setdefault(name.casefold(), []).append(sid)
            self.by_short.setdefault(_short(name).casefold(), []).append(sid)


def read_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """The SID -> name mapping of a map file; GroupNameError says what is wrong with it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise GroupNameError(f"cannot read group map {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return parse_map(data, os.fspath(path))


def parse_map(data: bytes | str, where: str = "group map") -> dict[str, str]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise GroupNameError(f"{where} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise GroupNameError(f"{where}: want a JSON object")
    if "format" in doc and doc["format"] != FORMAT:
        raise GroupNameError(f"{where}: format {doc['format']!r}, this fastkrb reads {FORMAT!r}")
    if "groups" in doc:
        groups = doc["groups"]
    elif "format" in doc:
        raise GroupNameError(f"{where}: no 'groups' object")
    else:
        groups = doc   # a hand-written map: the SID -> name object alone
    if not isinstance(groups, dict):
        raise GroupNameError(f"{where}: 'groups' must be an object of SID -> name")
    out: dict[str, str] = {}
    for sid, name in groups.items():
        try:
            out[check_sid(sid)] = check_group_name(name)
        except GroupNameError as exc:
            raise GroupNameError(f"{where}: {exc}") from None
    return out


def write_map(path: str | os.PathLike[str], groups: Mapping[str, str], *, source: str | None = None,
              domain: str | None = None, mode: int = 0o644) -> None:
    """Write a map file atomically: a temporary file in the same directory, fsync, rename over ``path``.

    A process reloading the map sees the old file or the new one, never a part. ``source`` and ``domain``
    are recorded for people (where the map came from); they are not read back.
    """
    checked = {check_sid(s): check_group_name(n) for s, n in groups.items()}
    doc: dict[str, Any] = {"format": FORMAT,
                           "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if source:
        doc["source"] = source
    if domain:
        doc["domain"] = domain
    doc["count"] = len(checked)
    doc["groups"] = dict(sorted(checked.items(), key=lambda kv: (kv[1].casefold(), kv[0])))
    data = (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()
    replace_file(path, data, mode=mode, prefix=".fastkrb-groups-")



class GroupNames:
    """SID -> name, and names back to SIDs; from a mapping, or from a file it reloads when it changes.

    ``GroupNames.load(path)`` reads the file now (an unusable file raises GroupNameError) and, with
    ``reload_interval`` > 0, ``maybe_reload()`` rereads it when it changed. ``reload_interval=0``: only
    ``reload()`` / ``check_file()`` do (the sidecar drives them from its housekeeping tick).
    """

    def __init__(self, groups: Mapping[str, str] | None = None, *, path: str | os.PathLike[str] | None = None,
                 reload_interval: float = 1.0) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reload_interval = float(reload_interval) if self.path is not None else 0.0
        self.generation = 0
        self.error: str | None = None      # why the last reload was refused (None after a good one)
        self.loaded_at = 0.0
        self._sig: tuple[int, int, int, int] | None = None
        self._failed_sig: tuple[int, int, int, int] | None = None
        self._failed_tries = 0
        self._next_check = 0.0
        self._lock = threading.Lock()
        if groups is not None:
            self._tables = _Tables(groups)
            self.loaded_at = time.time()
        elif self.path is not None:
            sig = file_signature(self.path)
            self._tables = _Tables(read_map(self.path))
            self._sig = sig
            self.loaded_at = time.time()
            self._next_check = time.monotonic() + self.reload_interval
        else:
            self._tables = _Tables({})

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, reload_interval: float = 1.0) -> GroupNames:
        return cls(path=path, reload_interval=reload_interval)

    # -- lookups ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tables.by_sid)

    def __contains__(self, sid: object) -> bool:
        return sid in self._tables.by_sid

    def __repr__(self) -> str:
        where = f" from {self.path!r}" if self.path else ""
        return f"<GroupNames {len(self)} groups{where}, generation {self.generation}>"

    def items(self) -> list[tuple[str, str]]:
        return list(self._tables.by_sid.items())

    def name(self, sid: str) -> str | None:
        """The group's name, or None when the map does not know the SID."""
        return self._tables.by_sid.get(sid)

    def display(self, sids: Iterable[str]) -> list[str]:
        """Names for SIDs, in order; a SID the map does not know stands for itself."""
        by_sid = self._tables.by_sid
        return [by_sid.get(s, s) for s in sids]

    def sids_for(self, name: str) -> tuple[str, ...]:
        """The SID(s) of a group name (``DOMAIN\\name`` or ``name``, any case); GroupNameError when none
        matches, or when a bare name matches groups of several domains."""
        t = self._tables
        key = name.casefold()
        if "\\" in name:
            hit = t.by_full.get(key)
            if not hit:
                raise GroupNameError(f"no group named '{name}' in the group map{self._where()}")
            return tuple(hit)
        hit = t.by_full.get(key) or t.by_short.get(key)
        if not hit:
            raise GroupNameError(f"no group named '{name}' in the group map{self._where()}")
        fulls = {t.by_sid[s].casefold() for s in hit}
        if len(fulls) > 1:
            names = ", ".join(sorted({t.by_sid[s] for s in hit}))
            raise GroupNameError(f"group name '{name}' is ambiguous ({names}): write DOMAIN\\name")
        return tuple(hit)

    def _where(self) -> str:
        return f" {self.path}" if self.path else ""

    # -- reloading ----------------------------------------------------------------------------------------

    def maybe_reload(self) -> bool:
        """Reread the file if ``reload_interval`` has passed since the last look and it changed; True when a
        new map is in service. Cheap enough for every request (one clock read between looks)."""
        if not self.reload_interval:
            return False
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.reload_interval
        return self.check_file()

    def check_file(self) -> bool:
        """Reload when the file's identity (inode, size, times) changed since the map in service was read."""
        if self.path is None:
            return False
        sig = file_signature(self.path)
        if sig is None or sig == self._sig:
            return False
        if sig == self._failed_sig and self._failed_tries >= _RETRIES:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Read the file again now. On any problem the old map stays in service, ``error`` says why, and
        False is returned."""
        if self.path is None:
            return False
        if not self._lock.acquire(blocking=False):
            return False   # another thread is reloading right now
        try:
            sig = file_signature(self.path)
            try:
                tables = _Tables(read_map(self.path))
            except GroupNameError as exc:
                self._failed_tries = self._failed_tries + 1 if sig == self._failed_sig else 1
                self._failed_sig = sig
                self.error = str(exc)
                log.warning("fastkrb: group map %s refused, the previous one stays in service: %s", self.path, exc)
                return False
            self._tables = tables
            self._sig = sig
            self._failed_sig = None
            self._failed_tries = 0
            self.error = None
            self.loaded_at = time.time()
            self.generation += 1
            return True
        finally:
            self._lock.release()
