"""The bench lab: a real MIT realm, real AP-REQs from MIT's initiator, minted AD-like tokens, MIT's acceptor.

Every bench feeds each implementation tokens it has never seen (a replay cache rejects a token the
second time), so a bench gets a fresh fastkrb Validator / MIT acceptor and walks a list of distinct tokens
once. Token lists are generated once per session and shared between benches. compare.py imports this
module to run the same lab outside pytest.

Knobs (environment): FASTKRB_BENCH_TOKENS (headline list, default 3000), FASTKRB_BENCH_VARIANT_TOKENS
(enctype / framing / mutual lists, default 1000), FASTKRB_BENCH_PAC_TOKENS (minted PAC-size lists, 500).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHES = Path(__file__).resolve().parent
REPO = BENCHES.parent
for _p in (REPO / "tests", REPO / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from fastkrb import Keytab, Validator, _native  # noqa: E402
from fastkrb.capacity.mit import MitAcceptor  # noqa: E402
from fastkrb.testing import make_keytab, mint  # noqa: E402
from support import apreq, mit  # noqa: E402  (tests/support: the real-KDC fixtures, independent of fastkrb)
from support.realm import KdcError  # noqa: E402

N_TOKENS = int(os.environ.get("FASTKRB_BENCH_TOKENS", "3000"))
N_VARIANT = int(os.environ.get("FASTKRB_BENCH_VARIANT_TOKENS", "1000"))
N_PAC = int(os.environ.get("FASTKRB_BENCH_PAC_TOKENS", "500"))

REALM = "BENCH.TEST"
DOMAIN = "bench.test"
KRB5_MECH = "1.2.840.113554.1.2.2"
SPNEGO_MECH = "1.3.6.1.5.5.2"
ENCTYPE_LABELS = {17: "aes128-sha1", 18: "aes256-sha1", 19: "aes128-sha256", 20: "aes256-sha384"}
PAC_SIZES_KIB = (0.5, 2, 8, 32)
REPLAY_CAPACITY = 1 << 20          # the Validator's default
STEADY_LIVE = 100_000              # live entries in a "steady state" cache (~330 req/s over 300 s)


# ---------------------------------------------------------------------------------------------------------
# Token lists


@dataclass
class TokenSet:
    """Distinct tokens for one service, and what they are (for extra_info and the compare table)."""

    label: str
    tokens: list[bytes] = field(repr=False)
    keytab: Path
    principal: str
    enctype: int
    framing: str
    mutual: bool
    source: str
    ticket_cipher_bytes: int
    pac_bytes: int | None
    gen_seconds: float

    @property
    def token_bytes(self) -> int:
        return int(statistics.median(len(t) for t in self.tokens))

    def describe(self) -> dict[str, Any]:
        return {"tokens": len(self.tokens), "token_bytes": self.token_bytes, "enctype": self.enctype,
                "framing": self.framing, "mutual": self.mutual, "source": self.source,
                "ticket_cipher_bytes": self.ticket_cipher_bytes, "pac_bytes": self.pac_bytes}


def warm_replay_cache(live: int = STEADY_LIVE, *, capacity: int = REPLAY_CAPACITY,
                      touch: int | None = None, now: float | None = None) -> Any:
    """A MemoryReplayCache as after a while in service: every page of its table already faulted in (short
    entries inserted, then expired and swept), then ``live`` live entries (expiring in an hour).

    A cache made fresh (``replay_cache="memory"``) is a table of lazily mapped zero pages: its first
    inserts take page faults (the ring's pages in insertion order, 2 MB each, up to ms apiece). So by
    default ``capacity - live`` short entries go first: the ring is written once all the way round.
    Benches that want a fresh table say "cold".
    """
    touch = max(capacity - live, 0) if touch is None else touch
    t0 = time.time() if now is None else now
    rc = _native.MemoryReplayCache(capacity, started=t0 - 3600.0)
    ins = rc.insert
    keys = os.urandom(16 * (touch + live))
    for i in range(0, 16 * touch, 16):
        ins(keys[i:i + 16], t0 - 5.0, t0 - 10.0)
    end = 16 * (touch + live)
    for i in range(16 * touch, end, 16):   # the first of these sweeps every expired entry out
        ins(keys[i:i + 16], t0 + 3600.0, t0 - 1.0)
    st = rc.stats()
    if st["entries"] != live:
        raise RuntimeError(f"replay cache prefill left {st['entries']} entries, wanted {live}")
    return rc


def fastkrb_validator(keytab: Path | Keytab, replay: str = "warm") -> Validator:
    """A fresh Validator: replay "warm" (steady-state memory cache), "cold" (replay_cache="memory" as
    constructed) or "none" (the crypto path only)."""
    kt = keytab if isinstance(keytab, Keytab) else str(keytab)
    if replay == "warm":
        return Validator(kt, replay_cache=warm_replay_cache(), cold_start=False)
    if replay == "cold":
        return Validator(kt, replay_cache="memory", cold_start=False)
    if replay == "none":
        import logging

        logging.getLogger("fastkrb").setLevel(logging.ERROR)  # the "replay disabled" warning, once per bench
        return Validator(kt, replay_cache="none", cold_start=False)
    raise ValueError(replay)


def _pac_spec(groups: int, upn: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"logon_info": {"group_rids": list(range(1100, 1100 + groups)), "user_rid": 1105,
                                           "domain_sid": "S-1-5-21-3623811015-3361044348-30300820"}}
    if not upn:
        spec["upn"] = None
    return spec


def _pac_for_size(target: int, kt: Keytab, principal: str) -> dict[str, Any]:
    """mint(pac=...) arguments for an AD-like PAC of about ``target`` bytes: a LOGON_INFO whose group list is
    sized to fit (8 bytes per group); the UPN buffer is left out only when even the bare PAC is too big."""
    def size(groups: int, upn: bool) -> int:
        m = mint(kt, server=principal, framing="raw", pac=_pac_spec(groups, upn))
        assert m.pac is not None
        return len(m.pac)

    upn = size(0, True) <= target
    base = size(0, upn)
    return _pac_spec(max(0, (target - base) // 8), upn)


class BenchLab:
    """The realm and the token lists of one bench session (or one compare.py run)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.realm: mit.MitRealm | None = None
        self.services: dict[int, str] = {}
        self.keytabs: dict[int, Path] = {}
        self._cache: dict[tuple[Any, ...], TokenSet] = {}
        self._saved_env: dict[str, str | None] = {}
        self.start_seconds = 0.0

    # --- lifecycle
    def start(self) -> BenchLab:
        """Realm with one service per enctype (aes256-sha1 alone for the headline), keytabs exported,
        alice kinit'ed and every service ticket fetched, so token generation never waits for the KDC."""
        t = time.perf_counter()
        missing = mit.mit_missing()
        if missing:
            raise KdcError(f"MIT krb5 programs missing: {', '.join(missing)} (run tests/install_kdc_deps.sh)")
        realm = mit.MitRealm(name=REALM, workdir=self.workdir / "realm", domain=DOMAIN).start()
        self.realm = realm
        try:
            for e in (18, 17, 19, 20):
                p = realm.add_service(realm.service(f"svc{e}"), [e])
                self.services[e] = p
                self.keytabs[e] = realm.export(realm.keytab(f"svc{e}"), p)
            cc = realm.kinit()
            for e, p in self.services.items():
                realm.fetch_ticket(cc, p)
                got = realm.ticket_enctype(cc, p)
                if got != e:
                    raise KdcError(f"ticket for {p} has enctype {got}, wanted {e}")
        except BaseException:
            realm.stop()
            raise
        env = realm.env
        self._saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        self.start_seconds = time.perf_counter() - t
        return self

    def stop(self) -> None:
        if self.realm is not None:
            self.realm.stop()
            self.realm = None
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __enter__(self) -> BenchLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- tokens
    def real_tokens(self, enctype: int = 18, *, mech: str = "krb5", mutual: bool = False,
                    n: int | None = None) -> TokenSet:
        """``n`` distinct initial context tokens from MIT's initiator (python-gssapi, ccache of alice), one
        fresh context each: what ``curl --negotiate`` sends (replay + sequence flags, mutual only if asked).
        The tickets carry MIT 1.20's minimal PAC."""
        n = N_TOKENS if n is None else n
        key = ("real", enctype, mech, mutual)
        have = self._cache.get(key)
        if have is not None and len(have.tokens) >= n:
            return have if len(have.tokens) == n else _slice(have, n)
        import gssapi

        assert self.realm is not None, "BenchLab.start() first"
        principal = self.services[enctype]
        t = time.perf_counter()
        cc = self.realm.ccache("default")
        creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{cc}"})
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        rf = gssapi.RequirementFlag
        flags = int(rf.replay_detection) | int(rf.out_of_sequence_detection)
        if mutual:
            flags |= int(rf.mutual_authentication)
        mech_oid = gssapi.OID.from_int_seq(KRB5_MECH if mech == "krb5" else SPNEGO_MECH)
        tokens = []
        for _ in range(n):
            ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=mech_oid, flags=flags)
            tokens.append(bytes(ctx.step()))
        gen = time.perf_counter() - t
        if len(set(tokens)) != len(tokens):
            raise RuntimeError("MIT's initiator produced a duplicate token")
        view = apreq.parse_ap_req(tokens[0])
        label = f"{ENCTYPE_LABELS[enctype]} {mech}{' mutual' if mutual else ''}"
        ts = TokenSet(label, tokens, self.keytabs[enctype], principal, enctype, mech, mutual,
                      "MIT 1.20 initiator (python-gssapi)", view.ticket_cipher[1] - view.ticket_cipher[0],
                      None, gen)
        self._cache[key] = ts
        return ts

    def ad_tokens(self, pac_kib: float, *, n: int | None = None) -> TokenSet:
        """``n`` minted AD-like tokens (aes256-sha1, krb5 framing, no mutual) whose ticket carries a signed PAC
        of about ``pac_kib`` KiB (LOGON_INFO with many groups): one ticket, a fresh authenticator each."""
        n = N_PAC if n is None else n
        key = ("ad", pac_kib)
        have = self._cache.get(key)
        if have is not None and len(have.tokens) >= n:
            return have if len(have.tokens) == n else _slice(have, n)
        t = time.perf_counter()
        principal = f"HTTP/ad{int(pac_kib * 1024)}.{DOMAIN}@{REALM}"
        kt = make_keytab([principal], enctypes=(18,))
        path = self.workdir / f"ad{int(pac_kib * 1024)}.keytab"
        kt.save(path)
        pac = _pac_for_size(int(pac_kib * 1024), kt, principal)
        first = mint(kt, server=principal, client=f"alice@{REALM}", framing="krb5",
                     gss_flags=("replay", "sequence"), pac=pac)
        tokens = [first.token_bytes] + [first.again().token_bytes for _ in range(n - 1)]
        gen = time.perf_counter() - t
        if len(set(tokens)) != len(tokens):
            raise RuntimeError("minted duplicate tokens")
        assert first.pac is not None
        view = apreq.parse_ap_req(tokens[0])
        ts = TokenSet(f"PAC {pac_kib:g} KiB", tokens, path, principal, 18, "krb5", False,
                      "fastkrb.testing.mint (AD-like signed PAC)", view.ticket_cipher[1] - view.ticket_cipher[0],
                      len(first.pac), gen)
        self._cache[key] = ts
        return ts

    def all_token_sets(self) -> list[TokenSet]:
        return list(self._cache.values())


def _slice(ts: TokenSet, n: int) -> TokenSet:
    return TokenSet(ts.label, ts.tokens[:n], ts.keytab, ts.principal, ts.enctype, ts.framing, ts.mutual,
                    ts.source, ts.ticket_cipher_bytes, ts.pac_bytes, ts.gen_seconds)


def check_token_set(ts: TokenSet) -> dict[str, Any]:
    """Both implementations accept the set's first token (with no replay cache, so the benches can still use
    it); the facts fastkrb reports, for the record."""
    import gssapi

    v = fastkrb_validator(ts.keytab, "none")
    res = v.validate(ts.tokens[0])
    if res.enctype != ts.enctype or res.mutual != ts.mutual:
        raise RuntimeError(f"{ts.label}: fastkrb saw enctype {res.enctype}, mutual {res.mutual}")
    with MitAcceptor(ts.keytab, rcache="none") as mit:
        out = mit.accept(ts.tokens[0])
        if out.more_steps:
            raise RuntimeError(f"{ts.label}: MIT's context is not complete after one token")
    return {"client": res.client, "server": res.server, "framing": res.framing, "pac_verified": res.pac_verified,
            "mit_client": str(gssapi.Name(out.initiator_name))}


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Collect, then keep the collector out of a timed loop (as timeit does)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------------------------------------
# pytest: collection of bench_*.py, fixtures, and the per-token runner

try:
    import pytest
except ImportError:  # compare.py without pytest installed
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    def pytest_configure(config: pytest.Config) -> None:
        """pytest-benchmark opens --benchmark-json's path as is: make its directory (.benchmarks/) first."""
        path = config.getoption("benchmark_json", None)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def pytest_collect_file(file_path: Path, parent: Any) -> Any:
        """Collect benches/bench_*.py (pyproject's python_files only names test_*.py). Paths given on the
        command line, or matched by python_files should it list bench_*.py one day, pytest collects itself."""
        if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
            return None
        if parent.session.isinitpath(file_path):
            return None
        if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
            return None
        return pytest.Module.from_parent(parent, path=file_path)

    @pytest.fixture(scope="session")
    def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchLab]:
        """The MIT realm BENCH.TEST (svc17..svc20, one enctype each) and the token lists built from it."""
        missing = mit.mit_missing()
        if missing:
            pytest.skip(f"MIT krb5 programs not installed ({', '.join(missing)}): run tests/install_kdc_deps.sh")
        b = BenchLab(tmp_path_factory.mktemp("bench-lab")).start()
        yield b
        b.stop()

    @pytest.fixture(scope="session")
    def aes256_tokens(lab: BenchLab) -> TokenSet:
        """The headline list: N_TOKENS real aes256-cts-hmac-sha1-96 tokens, krb5 framing, no mutual."""
        ts = lab.real_tokens(18, n=N_TOKENS)
        check_token_set(ts)
        return ts

    @pytest.fixture(scope="session")
    def per_token() -> Callable[..., None]:
        return run_per_token


def run_per_token(benchmark: Any, fn: Callable[[bytes], Any], ts: TokenSet, *, impl: str,
                  replay: str, rounds: int | None = None) -> None:
    """Time ``fn`` once per token, each token once: pytest-benchmark's stats are then per token.

    The first tokens warm up (caches, branch predictors, MIT's first rcache file creation) untimed. The
    result is dropped inside the timed call, so its release is counted (for MIT that is
    gss_delete_sec_context and the context's own krb5_context: ~15 µs that pytest-benchmark would
    otherwise move into the untimed setup of the next round).
    """
    tokens = ts.tokens

    def once(token: bytes) -> None:
        fn(token)

    warm = min(100, len(tokens) // 10)
    n = len(tokens) - warm if rounds is None else min(rounds, len(tokens) - warm)
    feed = iter(tokens)

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        return (next(feed),), {}

    benchmark.extra_info.update(ts.describe())
    benchmark.extra_info.update({"impl": impl, "replay_cache": replay, "token_set": ts.label})
    benchmark.pedantic(once, setup=setup, rounds=n, warmup_rounds=warm, iterations=1)
    meta = getattr(benchmark, "stats", None)
    if meta is not None:
        st = meta.stats
        benchmark.extra_info["us_per_token_median"] = round(st.median * 1e6, 3)
        benchmark.extra_info["us_per_token_min"] = round(st.min * 1e6, 3)
        benchmark.extra_info["tokens_per_s"] = round(1.0 / st.median)
        benchmark.extra_info["tokens_per_s_mean"] = round(1.0 / st.mean)
