"""SessionCookies' memory of opened cookies (sessions/cookie.py): by exact value, never past a session's end,
dropped whole when the key set changes, bounded (LRU); and the cheaper deflate still reads the old cookies."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fastkrb.errors import ConfigurationError, SessionExpired, SessionInvalid
from fastkrb.sessions import cookie as cookie_mod
from fastkrb.sessions.cookie import (
    CookieSettings,
    SessionCookies,
    dump_session_keys,
    new_session_key,
    parse_session_keys,
    rotate_session_key_file,
)
from fastkrb.sessions.keyfile import write_key_file
from fastkrb.sessions.principal import IdentityFacts

NOW = 1_800_000_000.0
DOM = "S-1-5-21-1004336348-1177238915-682003330-"


def result(client: str = "alice@EXAMPLE.TEST", end: float = NOW + 36000, groups: int = 0) -> Any:
    ident = None
    if groups:
        ident = IdentityFacts(user_sid=DOM + "1001", primary_group_sid=DOM + "513",
                              group_sids=tuple(DOM + str(1100 + 7 * i) for i in range(groups)), group_count=groups,
                              upn=client.lower())
    return SimpleNamespace(client=client, client_realm="EXAMPLE.TEST", server="HTTP/api.example.test@EXAMPLE.TEST",
                           end_time=end, identity=ident)


class Counting(SessionCookies):
    """Counts the cookies opened in full (AES-GCM, inflate, JSON), to see what the memory answered."""

    full = 0

    def _open(self, value: str, keys: Any, now: float | None) -> Any:
        self.full += 1
        return super()._open(value, keys, now)


def test_the_same_value_opens_once_and_gives_the_same_session() -> None:
    c = Counting([new_session_key()])
    v = c.seal(result(), now=NOW).value
    p = c.open(v, now=NOW)
    assert c.open(v, now=NOW + 10) is p and c.authenticate(f"a=b; fastkrb_session={v}", now=NOW + 20) is p
    assert c.full == 1 and c.remembered == 1


def test_a_remembered_session_is_never_served_past_its_end() -> None:
    c = Counting([new_session_key()], CookieSettings(max_age=600))
    v = c.seal(result(end=NOW + 300), now=NOW).value   # the ticket ends first
    c.open(v, now=NOW)
    with pytest.raises(SessionExpired) as e:
        c.open(v, now=NOW + 300)
    assert e.value.details["reason"] == "expiry" and c.full == 2 and c.remembered == 0
    w = c.seal(result(), now=NOW).value                 # sealed to end at NOW + max_age
    c.open(w, now=NOW + 599)
    with pytest.raises(SessionExpired):
        c.open(w, now=NOW + 600)
    assert c.remembered == 0


def test_a_tampered_value_is_never_served_from_memory() -> None:
    c = Counting([new_session_key()])
    v = c.seal(result(), now=NOW).value
    c.open(v, now=NOW)
    for bad in (v[:-1] + ("A" if v[-1] != "A" else "B"), v[:-2], v + "A", " " + v):
        with pytest.raises(SessionInvalid):
            c.open(bad, now=NOW)
    assert c.remembered == 1 and c.full == 5


def test_a_key_removed_from_the_file_ends_its_remembered_sessions_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = new_session_key(NOW - 100)
    write_key_file(path, dump_session_keys([old]))
    c = Counting(path, reload_interval=0)   # 0: the file looked at on every use
    v = c.seal(result(), now=NOW).value
    c.open(v, now=NOW)
    time.sleep(0.01)
    rotate_session_key_file(path, keep=1, now=NOW)      # a new key first, the old one kept: still opens
    assert c.open(v, now=NOW).kid == old.kid and c.full == 2   # the rotation dropped the memory once
    assert c.open(v, now=NOW).kid == old.kid and c.full == 2
    gen = c.generation
    keep = parse_session_keys(path.read_bytes())[0]
    time.sleep(0.01)
    write_key_file(path, dump_session_keys([keep]))     # the old key revoked
    with pytest.raises(SessionInvalid) as e:
        c.open(v, now=NOW)
    assert e.value.details["reason"] == "unknown_kid" and c.generation > gen and c.remembered == 0


def test_the_memory_is_bounded_least_recently_used_first() -> None:
    c = Counting([new_session_key()], cache_size=3)
    vs = [c.seal(result(f"u{i}@EXAMPLE.TEST"), now=NOW).value for i in range(5)]
    for v in vs[:3]:
        c.open(v, now=NOW)
    c.open(vs[0], now=NOW)          # vs[0] used again: vs[1] is now the oldest
    c.open(vs[3], now=NOW)
    assert c.remembered == 3 and c.full == 4
    c.open(vs[0], now=NOW)
    c.open(vs[2], now=NOW)
    assert c.full == 4              # still remembered
    c.open(vs[1], now=NOW)
    assert c.full == 5              # was dropped
    off = Counting([new_session_key()], cache_size=0)
    w = off.seal(result(), now=NOW).value
    off.open(w, now=NOW)
    off.open(w, now=NOW)
    assert off.full == 2 and off.remembered == 0
    with pytest.raises(ConfigurationError):
        SessionCookies([new_session_key()], cache_size=-1)


def test_cookies_sealed_with_the_32k_window_still_open(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_session_key()
    with monkeypatch.context() as m:
        m.setattr(cookie_mod, "_DEFLATE", (9, zlib.DEFLATED, -15))   # the format's earlier compressor
        old = SessionCookies([key]).seal(result(groups=40), now=NOW).value
    p = SessionCookies([key]).open(old, now=NOW)
    assert p.client == "alice@EXAMPLE.TEST" and p.identity is not None and len(p.identity.group_sids) == 40


def test_the_smaller_window_keeps_cookies_as_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cookie's size decides whether it fits a browser (4096 bytes): the cheaper deflate must not grow it."""
    key = new_session_key()
    for groups in (0, 20, 120):
        new = len(SessionCookies([key]).issue(result(groups=groups), now=NOW))
        with monkeypatch.context() as m:
            m.setattr(cookie_mod, "_DEFLATE", (9, zlib.DEFLATED, -15))
            was = len(SessionCookies([key]).issue(result(groups=groups), now=NOW))
        assert new <= was + was // 50, (groups, new, was)


def test_every_spelling_of_the_last_character_but_the_encoders_is_refused() -> None:
    """A base64url value's last character may carry unused bits; only the encoder's own spelling opens."""
    import string

    c = Counting([new_session_key()])
    v = c.seal(result(), now=NOW).value
    opened = [ch for ch in string.ascii_letters + string.digits + "-_" if _opens(c, v[:-1] + ch)]
    assert opened == [v[-1]]


def _opens(c: Any, value: str) -> bool:
    try:
        c.open(value, now=NOW)
    except SessionInvalid:
        return False
    return True
