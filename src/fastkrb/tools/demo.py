"""`fastkrb demo`: the main job on an embedded default, in well under a minute.

A throwaway realm keytab, tokens minted by fastkrb.testing (a KDC in a function), and the verdicts a
service would see: an accepted request with its mutual-authentication answer, a replay, a clock-skew
rejection and a stale keytab, each with its cause and fix; then a single-core throughput figure.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

from fastkrb.errors import KerberosError
from fastkrb.keytab import Keytab
from fastkrb.testing import make_keytab, mint
from fastkrb.validator import Validator

SPN = "HTTP/api.example.test@EXAMPLE.TEST"
USER = "alice@EXAMPLE.TEST"


def _show_error(title: str, exc: KerberosError) -> None:
    print(f"\n== {title}: REJECTED [{exc.code}]")
    print(f"   cause: {exc.cause}")
    print(f"   fix:   {exc.fix}")


def _client_clock() -> tuple[int, int]:
    """The authenticator time a client with a synchronised clock writes: now, to the microsecond.

    (The validator was started a moment ago; an authenticator older than its start is refused during the
    first clock_skew seconds, RFC 4120 §3.2.3.)
    """
    now = time.time()
    return int(now), int((now % 1) * 1_000_000)


def run_demo(seconds: float = 2.0) -> int:
    rng = random.Random(1)
    kt = make_keytab(principals=(SPN,), enctypes=(18, 17, 20, 19), kvno=3, rng=rng)
    with tempfile.TemporaryDirectory(prefix="fastkrb-demo-") as tmp:
        path = os.path.join(tmp, "demo.keytab")
        kt.save(path)
        print(f"throwaway keytab {path}:")
        for e in Keytab.load(path).entries:
            print(f"   kvno {e.kvno}  enctype {e.enctype:>2}  {e.principal}")
        v = Validator(path)

        t = mint(kt, server=SPN, client=USER, ticket_enctype=18, framing="header",
                 gss_flags=("mutual", "integ", "conf"), rng=rng, ctime=(c := _client_clock())[0], cusec=c[1])
        res = v.validate(t.token)
        print(f"\n== request with {t.header[:42]}...: ACCEPTED")
        print(f"   client {res.client} (REMOTE_USER {res.short_name}), service {res.server}")
        print(f"   ticket {res.enctype} kvno {res.kvno}, mutual authentication: {res.mutual}")
        print(f"   answer: WWW-Authenticate: {str(res.www_authenticate)[:60]}...")

        try:
            v.validate(t.token)
        except KerberosError as exc:
            _show_error("the same Authorization header again", exc)

        skewed = mint(kt, server=SPN, client=USER, ctime=int(time.time()) - 420, framing="header", rng=rng)
        try:
            v.validate(skewed.token)
        except KerberosError as exc:
            _show_error("a client whose clock is 7 minutes slow", exc)

        rotated = make_keytab(principals=(SPN,), enctypes=(18,), kvno=4, rng=rng)
        c = _client_clock()
        stale = mint(rotated, server=SPN, client=USER, framing="header", rng=rng, ctime=c[0], cusec=c[1])
        try:
            v.validate(stale.token)
        except KerberosError as exc:
            _show_error("a ticket issued after the key was rotated (kvno 4), keytab still at kvno 3", exc)

        # Throughput: distinct tokens (fresh authenticators for one ticket, as a client sends them)
        # through the real path with the replay cache, one thread; no mutual authentication, like curl.
        n = 20_000
        base = mint(kt, server=SPN, client=USER, ticket_enctype=18, framing="spnego", gss_flags=("integ", "conf"),
                    rng=rng, ctime=(c := _client_clock())[0], cusec=c[1])
        tokens = base.variants(n, now=time.time())
        fresh = Validator(path, cold_start=False)
        validate = fresh.validate
        t0 = time.perf_counter()
        for tok in tokens:
            validate(tok)
        dt = (time.perf_counter() - t0) / n
        stages = fresh.profile(tokens[0], iterations=20000)
        print(f"\n== throughput, one core, aes256-cts-hmac-sha1-96 SPNEGO tokens of {len(tokens[0])} bytes:")
        print(f"   {n} distinct tokens through validate() with the replay cache: {dt * 1e6:.2f} us each "
              f"= {1 / dt:,.0f} validations/s")
        print("   where the time goes (ns, measured in C): " +
              ", ".join(f"{k} {val:.0f}" for k, val in stages.items() if val))
    return 0
