"""The Validator contract on minted tokens: every acceptance check and every error code.

Minted tokens (fastkrb.testing) let each check be hit alone; the same checks are exercised against
real MIT and Heimdal KDCs in test_interop.py.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from fastkrb import KerberosError, Keytab, Validator
from fastkrb.testing import make_keytab, mint

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
USER = "alice@EXAMPLE.TEST"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def kt() -> Keytab:
    return make_keytab(principals=(SPN, "HTTP/other.example.test@EXAMPLE.TEST"), enctypes=(18, 17, 20, 19, 23),
                       kvno=3, rng=random.Random(7))


def v_(kt: Keytab, **kw: object) -> Validator:
    kw.setdefault("cold_start", False)
    kw.setdefault("enctypes", (20, 19, 18, 17))
    return Validator(kt, **kw)  # type: ignore[arg-type]


def code_of(v: Validator, token: object, **kw: object) -> str:
    with pytest.raises(KerberosError) as ei:
        v.validate(token, **kw)  # type: ignore[arg-type]
    err = ei.value
    assert err.cause and err.fix, "every rejection names a cause and a fix"
    return err.code


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
@pytest.mark.parametrize("framing", ["spnego", "krb5", "krb5-ms", "spnego-ms", "raw", "header"])
def test_accepts_every_enctype_and_framing(kt: Keytab, enctype: int, framing: str) -> None:
    v = v_(kt)
    m = mint(kt, server=SPN, client=USER, ticket_enctype=enctype, session_enctype=enctype, now=NOW,
             framing=framing, rng=random.Random(enctype))  # type: ignore[arg-type]
    res = v.validate(m.token, now=NOW + 1)
    assert res.client == USER
    assert res.server == SPN
    assert res.client_realm == "EXAMPLE.TEST"
    assert res.enctype == enctype and res.kvno == 3
    assert res.session_key == m.session_key
    if framing != "raw":
        assert res.mutual
    assert res.response_token is not None
    # the AP-REP is framed like the request and decrypts to the authenticator's time
    assert m.verify_ap_rep(res.response_token)
    assert res.www_authenticate is not None and res.www_authenticate.startswith("Negotiate ")


def test_non_mutual_krb5_has_no_answer_spnego_has_accept_completed(kt: Keytab) -> None:
    v = v_(kt)
    m = mint(kt, server=SPN, now=NOW, gss_flags=("integ",), framing="krb5", rng=random.Random(1))
    res = v.validate(m.token, now=NOW)
    assert not res.mutual and res.response_token is None and res.www_authenticate is None
    m = mint(kt, server=SPN, now=NOW, gss_flags=("integ",), framing="spnego", rng=random.Random(2))
    res = v.validate(m.token, now=NOW)
    assert not res.mutual and res.response_token is not None and res.response_token[0] == 0xA1


def test_replay_within_and_across_validators_sharing_nothing(kt: Keytab) -> None:
    v = v_(kt)
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(3))
    v.validate(m.token, now=NOW)
    with pytest.raises(KerberosError) as ei:
        v.validate(m.token, now=NOW + 0.002)
    assert ei.value.code == "replay"
    assert ei.value.details["first_seen_ago"] == pytest.approx(0.002, abs=1e-6)
    # after the skew window the entry expires, and the authenticator is refused by the clock instead
    assert code_of(v, m.token, now=NOW + 400) == "clock_skew"


def test_replay_key_is_not_the_cleartext_sname(kt: Keytab) -> None:
    """Rewriting the unauthenticated sname must not dodge the cache (go-krb5 PR #155)."""
    v = v_(kt)
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(4))
    a = v.validate(m.token, now=NOW)
    assert len(a.replay_key) == 16
    assert code_of(v, m.token, now=NOW) == "replay"


def test_clock_skew_both_directions(kt: Keytab) -> None:
    v = v_(kt)
    ahead = mint(kt, server=SPN, now=NOW, ctime=int(NOW + 400), rng=random.Random(5))
    with pytest.raises(KerberosError) as ei:
        v.validate(ahead.token, now=NOW)
    assert ei.value.code == "clock_skew"
    assert ei.value.details["direction"] == "client_ahead"
    assert ei.value.details["offset_seconds"] == pytest.approx(400, abs=1)
    behind = mint(kt, server=SPN, now=NOW, ctime=int(NOW - 301), rng=random.Random(6))
    with pytest.raises(KerberosError) as ei:
        v.validate(behind.token, now=NOW)
    assert ei.value.details["direction"] == "client_behind"
    # inside the window on both sides
    ok = mint(kt, server=SPN, now=NOW, ctime=int(NOW - 299), rng=random.Random(7))
    v.validate(ok.token, now=NOW)


def test_ticket_times(kt: Keytab) -> None:
    v = v_(kt)
    expired = mint(kt, server=SPN, now=NOW, authtime=int(NOW - 7200), endtime=int(NOW - 301), rng=random.Random(8))
    assert code_of(v, expired.token, now=NOW) == "ticket_expired"
    within = mint(kt, server=SPN, now=NOW, authtime=int(NOW - 7200), endtime=int(NOW - 299), rng=random.Random(9))
    v.validate(within.token, now=NOW)
    future = mint(kt, server=SPN, now=NOW, starttime=int(NOW + 301), endtime=int(NOW + 3600), rng=random.Random(10))
    assert code_of(v, future.token, now=NOW) == "ticket_not_yet_valid"


def test_invalid_flag(kt: Keytab) -> None:
    m = mint(kt, server=SPN, now=NOW, flags=("forwardable", "invalid"), rng=random.Random(11))
    assert code_of(v_(kt), m.token, now=NOW) == "ticket_invalid"


def test_enctype_policy(kt: Keytab) -> None:
    m = mint(kt, server=SPN, now=NOW, ticket_enctype=17, session_enctype=17, rng=random.Random(12))
    assert code_of(v_(kt, enctypes=(18,)), m.token, now=NOW) == "enctype_not_permitted"
    rc4 = mint(kt, server=SPN, now=NOW, ticket_enctype=23, session_enctype=23, rng=random.Random(13))
    assert code_of(v_(kt), rc4.token, now=NOW) == "enctype_not_permitted"
    res = v_(kt, enctypes=(23, 18)).validate(rc4.token, now=NOW)
    assert res.enctype == 23
    # an AES ticket with an RC4 session key is refused when RC4 is not permitted
    mixed = mint(kt, server=SPN, now=NOW, ticket_enctype=18, session_enctype=23, rng=random.Random(14))
    assert code_of(v_(kt), mixed.token, now=NOW) == "enctype_not_permitted"


def test_wrong_principal_and_principals_filter(kt: Keytab) -> None:
    other = make_keytab(principals=("HTTP/elsewhere.example.test@EXAMPLE.TEST",), enctypes=(18,), kvno=3,
                        rng=random.Random(15))
    m = mint(other, now=NOW, rng=random.Random(16))
    with pytest.raises(KerberosError) as ei:
        v_(kt).validate(m.token, now=NOW)
    assert ei.value.code == "wrong_principal"
    assert SPN in ei.value.details["keytab_principals"]
    m2 = mint(kt, server="HTTP/other.example.test@EXAMPLE.TEST", now=NOW, rng=random.Random(17))
    assert code_of(v_(kt, principals=[SPN]), m2.token, now=NOW) == "wrong_principal"
    assert v_(kt, principals=["HTTP/other.example.test"]).validate(m2.token, now=NOW).server.startswith("HTTP/other")


def test_key_selection_diagnoses(kt: Keytab) -> None:
    v = v_(kt)
    newer = make_keytab(principals=(SPN,), enctypes=(18,), kvno=5, rng=random.Random(18))
    with pytest.raises(KerberosError) as ei:
        v.validate(mint(newer, now=NOW, rng=random.Random(19)).token, now=NOW)
    assert ei.value.code == "key_version_mismatch"
    assert ei.value.details["ticket_kvno"] == 5 and ei.value.details["keytab_kvnos"] == [3]
    assert "keytab is out of date" in ei.value.cause
    older = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(20))
    with pytest.raises(KerberosError) as ei:
        v.validate(mint(older, now=NOW, rng=random.Random(21)).token, now=NOW)
    assert ei.value.code == "key_version_mismatch" and ei.value.details["direction"] == "ticket_older"
    # same kvno and enctype, different key: the keytab was made from the wrong password
    wrong = make_keytab(principals=(SPN,), enctypes=(18,), kvno=3, rng=random.Random(22))
    assert code_of(v, mint(wrong, now=NOW, rng=random.Random(23)).token, now=NOW) == "integrity"
    # kvno present but not with this enctype
    only17 = Keytab()
    for e in kt.entries:
        if e.principal == SPN and e.enctype == 17:
            only17.add(e.principal, e.key, enctype=17, kvno=e.kvno)
    m = mint(kt, server=SPN, now=NOW, ticket_enctype=18, rng=random.Random(24))
    with pytest.raises(KerberosError) as ei:
        v_(only17).validate(m.token, now=NOW)
    assert ei.value.code == "enctype_not_in_keytab"


def test_rotation_keeps_old_tickets_valid(kt: Keytab) -> None:
    """MIT semantics: the ticket's kvno first, then any key of the enctype (kvno mismatch tolerated)."""
    both = Keytab()
    for e in kt.entries:
        both.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    new = make_keytab(principals=(SPN,), enctypes=(18,), kvno=4, rng=random.Random(25))
    for e in new.entries:
        both.add(e.principal, e.key, enctype=e.enctype, kvno=e.kvno)
    v = v_(both)
    assert v.validate(mint(kt, server=SPN, now=NOW, ticket_enctype=18, rng=random.Random(26)).token, now=NOW).kvno == 3
    assert v.validate(mint(new, now=NOW, rng=random.Random(27)).token, now=NOW).kvno == 4
    # a ticket that names kvno 9 but was made with the kvno-3 key still validates (kvno is a hint)
    k3 = next(e for e in kt.entries if e.principal == SPN and e.enctype == 18)
    lying = mint(server=SPN, key=k3.key, now=NOW, ticket_enctype=18, kvno=9, rng=random.Random(28))
    assert v.validate(lying.token, now=NOW).kvno == 3


def test_name_mismatch(kt: Keytab) -> None:
    m = mint(kt, server=SPN, client=USER, now=NOW, rng=random.Random(29), authenticator_client="mallory@EXAMPLE.TEST")
    assert code_of(v_(kt), m.token, now=NOW) == "name_mismatch"


def test_realms(kt: Keytab) -> None:
    m = mint(kt, server=SPN, client="bob@PARTNER.TEST", now=NOW, rng=random.Random(30))
    with pytest.raises(KerberosError) as ei:
        v_(kt).validate(m.token, now=NOW)
    assert ei.value.code == "realm_not_allowed"
    res = v_(kt, allowed_realms=["EXAMPLE.TEST", "PARTNER.TEST"]).validate(m.token, now=NOW)
    assert res.client == "bob@PARTNER.TEST" and res.client_realm == "PARTNER.TEST"
    hop = mint(kt, server=SPN, client="bob@PARTNER.TEST", transited=b"EVIL.TEST", now=NOW, rng=random.Random(31))
    with pytest.raises(KerberosError) as ei:
        v_(kt, allowed_realms=["EXAMPLE.TEST", "PARTNER.TEST"]).validate(hop.token, now=NOW)
    assert ei.value.code == "realm_not_allowed" and ei.value.details["transited_realm"] == "EVIL.TEST"
    checked = mint(kt, server=SPN, client="bob@PARTNER.TEST", transited=b"EVIL.TEST", now=NOW,
                   flags=("forwardable", "transited-policy-checked"), rng=random.Random(32))
    v_(kt, allowed_realms=["EXAMPLE.TEST", "PARTNER.TEST"]).validate(checked.token, now=NOW)


def test_channel_bindings(kt: Keytab) -> None:
    cb = b"tls-server-end-point:" + bytes(32)
    v = v_(kt)
    m = mint(kt, server=SPN, now=NOW, channel_bindings=cb, rng=random.Random(33))
    assert v.validate(m.token, now=NOW, channel_bindings=cb).channel_bindings == "matched"
    m = mint(kt, server=SPN, now=NOW, channel_bindings=cb, rng=random.Random(34))
    assert code_of(v, m.token, now=NOW, channel_bindings=b"tls-server-end-point:" + b"\1" * 32) == "channel_bindings"
    # Java hashes "no address" with type 255: accepted when the application data match
    j = mint(kt, server=SPN, now=NOW, channel_bindings=cb, java_style_bindings=True, rng=random.Random(35))
    assert v.validate(j.token, now=NOW, channel_bindings=cb).channel_bindings == "matched_java"
    # the acceptor has none: the client's are ignored (MIT)
    m = mint(kt, server=SPN, now=NOW, channel_bindings=cb, rng=random.Random(36))
    assert v.validate(m.token, now=NOW).channel_bindings == "ignored"
    # the client sent none: accepted unless it declared them mandatory (KERB_AP_OPTIONS_CBT)
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(37))
    assert v.validate(m.token, now=NOW, channel_bindings=cb).channel_bindings == "client_none"
    cbt = [(1, _if_relevant_ap_options())]
    m = mint(kt, server=SPN, now=NOW, authenticator_authorization_data=cbt, rng=random.Random(38))
    assert code_of(v, m.token, now=NOW, channel_bindings=cb) == "channel_bindings"


def _if_relevant_ap_options() -> bytes:
    from fastkrb.krb.asn1 import ADEntry, encode_authorization_data

    return encode_authorization_data([ADEntry(143, (0x4000).to_bytes(4, "little"))])


def test_delegation_and_subkey(kt: Keytab) -> None:
    krb_cred = bytes.fromhex("7603020100")  # opaque to the validator: passed through
    m = mint(kt, server=SPN, now=NOW, delegated=krb_cred, gss_flags=("mutual", "deleg"), subkey=True,
             seq_number=42, rng=random.Random(39))
    res = v_(kt).validate(m.token, now=NOW)
    assert res.delegated == krb_cred
    assert res.subkey is not None and res.seq_number == 42


def test_pac_verified_and_forged(kt: Keytab) -> None:
    from fastkrb.krb.pac import build_pac

    key18 = next(e for e in kt.entries if e.principal == SPN and e.enctype == 18)
    pac = build_pac(client_name="alice", auth_time=int(NOW), server_key=(18, key18.key), minimal=True)
    m = mint(kt, server=SPN, now=NOW, ticket_enctype=18, pac=pac, rng=random.Random(40))
    res = v_(kt).validate(m.token, now=NOW)
    assert res.pac_verified and res.pac is not None
    # rename the client in PAC_CLIENT_INFO: the server signature must catch it
    forged = pac.replace("alice".encode("utf-16-le"), "admin".encode("utf-16-le"))
    assert forged != pac
    m = mint(kt, server=SPN, now=NOW, ticket_enctype=18, pac=forged, rng=random.Random(41))
    assert code_of(v_(kt), m.token, now=NOW) == "integrity"
    # the KDC signature is outside what a service key can check (zeroed for the server signature)
    assert v_(kt, verify_pac=False).validate(m.token, now=NOW).pac_verified is False


def test_cold_start_rule() -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(42))
    started = time.time()
    v = Validator(kt)  # cold_start=True by default
    old = mint(kt, server=SPN, ctime=int(started - 10), rng=random.Random(43))
    with pytest.raises(KerberosError) as ei:
        v.validate(old.token, now=started + 1)
    assert ei.value.code == "replay_cache_unavailable"
    assert "RFC 4120" in ei.value.cause
    fresh = mint(kt, server=SPN, ctime=int(started + 2), rng=random.Random(44))
    v.validate(fresh.token, now=started + 3)
    # after clock_skew seconds the rule no longer applies
    late = mint(kt, server=SPN, ctime=int(started + 290), rng=random.Random(45))
    v.validate(late.token, now=started + 301)


def test_replay_cache_capacity_fails_closed() -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(46))
    v = Validator(kt, cold_start=False, replay_capacity=16)
    toks = [mint(kt, server=SPN, now=NOW, rng=random.Random(100 + i)).token for i in range(17)]
    for t in toks[:16]:
        v.validate(t, now=NOW)
    assert code_of(v, toks[16], now=NOW) == "replay_cache_unavailable"
    stats = v.replay_stats()
    assert stats is not None and stats["full"] == 1 and stats["entries"] == 16
    # once the entries expire, room returns
    late = mint(kt, server=SPN, now=NOW + 700, rng=random.Random(200))
    v.validate(late.token, now=NOW + 700)


def test_none_replay_cache_accepts_twice() -> None:
    kt = make_keytab(principals=(SPN,), enctypes=(18,), kvno=1, rng=random.Random(47))
    v = Validator(kt, replay_cache="none")
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(48))
    v.validate(m.token, now=NOW)
    v.validate(m.token, now=NOW)


def test_no_bit_flip_changes_the_authenticated_identity(kt: Keytab) -> None:
    """Flip every bit position class of a token: what still validates must name the same identity.

    Only cleartext fields outside every MAC (AP options, the kvno hint, and the ticket's sname and realm,
    which an acceptor that tries its keys like MIT's reads as an alias: only requested_server shows them)
    can change without rejection; the ticket and authenticator ciphertexts never can.
    """
    v = v_(kt, replay_cache="none")
    m = mint(kt, server=SPN, now=NOW, framing="raw", rng=random.Random(49))
    base = v.validate(m.token, now=NOW)
    raw = bytes(m.token)
    accepted = renamed = 0
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            t = bytearray(raw)
            t[i] ^= bit
            try:
                res = v.validate(bytes(t), now=NOW)
            except KerberosError:
                continue
            assert (res.client, res.server, res.session_key) == (base.client, base.server, base.session_key)
            if res.requested_server != base.requested_server:
                renamed += 1
                continue
            accepted += 1
    assert accepted < 16  # a handful of unprotected option/kvno bits, nothing more
    assert renamed <= 2 * len(SPN)  # the clear-text sname/realm bytes, nothing more


def test_threads_share_one_validator(kt: Keytab) -> None:
    v = v_(kt)
    tokens = [mint(kt, server=SPN, now=NOW, rng=random.Random(300 + i)).token for i in range(64)]
    results: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for t in tokens:
            try:
                v.validate(t, now=NOW)
                out = "ok"
            except KerberosError as exc:
                out = exc.code
            with lock:
                results.append(out)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("ok") == 64  # each token accepted exactly once across threads
    assert results.count("replay") == 64 * 3


def test_reload_keeps_replay_state(kt: Keytab) -> None:
    v = v_(kt)
    m = mint(kt, server=SPN, now=NOW, rng=random.Random(50))
    v.validate(m.token, now=NOW)
    v.reload(kt)
    assert code_of(v, m.token, now=NOW) == "replay"


@pytest.mark.parametrize("garbage", [
    b"", b"\x00", b"Negotiate", b"Negotiate !!!", b"\x60\x80", b"\x6e\x84\xff\xff\xff\xff",
    b"NTLMSSP\x00\x01\x00\x00\x00", b"Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==",
])
def test_garbage_is_typed(kt: Keytab, garbage: bytes) -> None:
    code = code_of(v_(kt), garbage, now=NOW)
    assert code in ("malformed", "unsupported_mechanism")
    if b"NTLM" in garbage or b"TlRM" in garbage:
        assert code == "unsupported_mechanism"


def test_oversized_token_refused(kt: Keytab) -> None:
    v = v_(kt, max_token_size=1024)
    m = mint(kt, server=SPN, now=NOW, authorization_data=[(1234, b"x" * 2000)], rng=random.Random(51))
    assert code_of(v, m.token, now=NOW) == "malformed"
    assert code_of(v, b"\x60" + b"A" * 10_000_000, now=NOW) == "malformed"


class _DictReplay:
    """A Python replay backend (an AsyncReplayCache, as fastkrb.replay's Redis backend is), failing on demand."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seen: dict[bytes, float] = {}
        self.broken = False

    def insert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        if self.broken:
            raise ConnectionError("backend down")
        if key in self.seen:
            return False, self.seen[key]
        self.seen[key] = now
        return True, None

    def insert_many(self, items: list[tuple[bytes, float]], now: float) -> list[tuple[bool, float | None]]:
        return [self.insert(k, e, now) for k, e in items]

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.seen)}

    def close(self) -> None:
        pass

    async def ainsert(self, key: bytes, expiry: float, now: float) -> tuple[bool, float | None]:
        return self.insert(key, expiry, now)

    async def ainsert_many(self, items: list[tuple[bytes, float]], now: float) -> list[tuple[bool, float | None]]:
        return self.insert_many(items, now)

    async def aping(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_python_backend_sync_and_async(kt: Keytab) -> None:
    import asyncio

    cache = _DictReplay()
    v = v_(kt, replay_cache=cache)
    a = mint(kt, server=SPN, now=NOW, rng=random.Random(60))
    b = mint(kt, server=SPN, now=NOW, rng=random.Random(61))
    v.validate(a.token, now=NOW)
    with pytest.raises(KerberosError) as ei:
        v.validate(a.token, now=NOW + 0.5)
    assert ei.value.code == "replay" and ei.value.details["first_seen_ago"] == pytest.approx(0.5)
    assert asyncio.run(v.avalidate(b.token, now=NOW)).client == USER
    with pytest.raises(KerberosError) as ei:
        asyncio.run(v.avalidate(b.token, now=NOW))
    assert ei.value.code == "replay" and "already accepted" in ei.value.cause
    cache.broken = True
    c = mint(kt, server=SPN, now=NOW, rng=random.Random(62))
    assert code_of(v, c.token, now=NOW) == "replay_cache_unavailable"
    with pytest.raises(KerberosError) as ei:
        asyncio.run(v.avalidate(c.token, now=NOW))
    assert ei.value.code == "replay_cache_unavailable"


@pytest.mark.parametrize("kind", ["spnego-mutual", "krb5", "raw-no-mutual", "pac"])
def test_validation_leaves_no_plaintext_in_its_scratch(kt: Keytab, kind: str) -> None:
    """fk_scratch_wipe zeroes every byte a validation wrote after the decoded token (ticket and authenticator
    plaintexts, the PAC copy, the answer), accepted or refused; without the wipe the session key is there."""
    from fastkrb import _native

    kw: dict[str, object] = {"spnego-mutual": {}, "krb5": {"framing": "krb5"},
                             "raw-no-mutual": {"framing": "raw", "ap_options": ()}, "pac": {"pac": True}}[kind]
    m = mint(kt, now=NOW, rng=random.Random(5), **kw)  # type: ignore[arg-type]
    v = v_(kt, replay_cache=None)
    nv = v._native
    code, left = _native.scratch_residue(nv, m.token_bytes, NOW, wipe=False)
    assert code == 0 and m.session_key in left   # the test can fail: the plaintexts are there before the wipe
    for token in (m.token_bytes, m.token_bytes[:-1] + bytes([m.token_bytes[-1] ^ 1])):   # accepted, refused
        code, left = _native.scratch_residue(nv, token, NOW)
        assert left == bytes(len(left)), (code, kind)
