"""MIT's GSSAPI through python-gssapi: the initiator that makes every interop token and the reference acceptor.

Whatever KDC issued the tickets (MIT, Heimdal, ...), tokens come from MIT's initiator reading a ccache,
and MIT's acceptor gives the verdict fastkrb's is compared with. Nothing here imports fastkrb, nor the rest
of this package: run as a script (``python mitgss.py accept``) it is MIT's acceptor in a child process, used
under libfaketime when the verdict must be taken at another time than now.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class MitVerdict(NamedTuple):
    """MIT's acceptor on one token: accepted?, its error text, and its output token (AP-REP) if any."""

    ok: bool
    error: str
    output_token: bytes | None


def _mech_oid(mech: str) -> Any:
    import gssapi

    if mech == "krb5":
        return gssapi.MechType.kerberos
    if mech == "spnego":
        return gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
    raise ValueError(f"mech must be 'krb5' or 'spnego', not {mech!r}")


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set variables for in-process MIT library calls (it reads KRB5_CONFIG per krb5 context)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class InitContext:
    """MIT's initiator context behind a token; ``step`` feeds it the acceptor's answer (AP-REP)."""

    ctx: Any  # gssapi.SecurityContext
    env: dict[str, str]
    mech: str

    def step(self, token: bytes) -> bytes | None:
        with environment(self.env):
            out = self.ctx.step(token)
        return bytes(out) if out else None

    @property
    def complete(self) -> bool:
        return bool(self.ctx.complete)


def fresh_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread: MIT keeps the last error message per thread, and one from another test would
    leak into the message a GSSError reads."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "GSS call hung"
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def initiator_verdict(init: InitContext, answer: bytes) -> tuple[int, str, bytes | None]:
    """(minor status, message, output token) of MIT's initiator fed ``answer``; it must refuse."""
    from gssapi.raw.misc import GSSError

    def step() -> tuple[int, str, bytes | None]:
        try:
            out = init.step(answer)
        except GSSError as exc:
            return exc.min_code, str(exc), None
        # an error that comes with an output token (SPNEGO's own reject) is raised on the next access
        try:
            complete = init.complete
        except GSSError as exc:
            return exc.min_code, str(exc), out
        raise AssertionError(f"MIT's initiator accepted the error token (complete={complete})")
    return fresh_thread(step)


def finish_initiator(init: InitContext, response_token: bytes) -> bool:
    """Feed the acceptor's response to MIT's initiator; True when MIT verified it and completed the context.

    Raises gssapi's GSSError when MIT rejects the AP-REP (bad MAC, wrong session key, malformed).
    """
    init.step(response_token)
    return init.complete


def _cb(channel_bindings: bytes | None) -> Any:
    if channel_bindings is None:
        return None
    import gssapi.raw

    return gssapi.raw.ChannelBindings(application_data=channel_bindings)


def accept_in_process(token: bytes, keytab: str | Path, channel_bindings: bytes | None,
                      env: Mapping[str, str]) -> MitVerdict:
    import gssapi
    from gssapi.raw.misc import GSSError

    with environment(env):
        try:
            creds = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
            ctx = gssapi.SecurityContext(creds=creds, usage="accept", channel_bindings=_cb(channel_bindings))
            out = ctx.step(token)
            # SPNEGO hands back its reject token first and raises the stored error on the next access.
            complete = ctx.complete
        except GSSError as exc:
            return MitVerdict(False, str(exc), None)
        if not complete:
            return MitVerdict(False, "context not complete after one token", bytes(out) if out else None)
        return MitVerdict(True, "", bytes(out) if out else None)


@dataclass(frozen=True)
class MitView:
    """What MIT's acceptor learnt from an accepted token: the ground truth for fields fastkrb reports."""

    client: str
    pac_buffers: tuple[str, ...]  # "urn:mspac:..." name attributes; empty when the ticket has no PAC
    delegated: bool


def inspect_in_process(token: bytes, keytab: str | Path, env: Mapping[str, str]) -> MitView:
    """Accept ``token`` with MIT and read the client name, PAC buffers and delegated credential (raises on
    rejection: use it only on tokens MIT accepts)."""
    import gssapi

    with environment(env):
        creds = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
        ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        ctx.step(token)
        name = ctx.initiator_name
        attrs = tuple(sorted(a.decode() for a in name.attributes if a.startswith(b"urn:mspac:")))
        return MitView(str(name), attrs, ctx.delegated_creds is not None)



def initiate(principal: str, ccache: str | Path, env: Mapping[str, str], *, mech: str = "krb5",
             mutual: bool = False, channel_bindings: bytes | None = None,
             delegate: bool = False) -> tuple[bytes, InitContext]:
    """An initial context token from MIT's initiator for ``principal`` with the tickets in ``ccache``, under
    ``env`` (KRB5_CONFIG and friends): replay and sequence flags always, mutual and delegation on request."""
    import gssapi

    env = {**env, "KRB5CCNAME": f"FILE:{ccache}"}
    rf = gssapi.RequirementFlag
    flags = int(rf.replay_detection) | int(rf.out_of_sequence_detection)
    if mutual:
        flags |= int(rf.mutual_authentication)
    if delegate:
        flags |= int(rf.delegate_to_peer)
    with environment(env):
        creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", mech=_mech_oid(mech),
                                     flags=flags, channel_bindings=_cb(channel_bindings))
        token = ctx.step()
    return bytes(token), InitContext(ctx, env, mech)


def accept_in_child(token: bytes, keytab: str | Path, channel_bindings: bytes | None,
                    env: Mapping[str, str]) -> MitVerdict:
    """MIT's verdict from a child process with environment ``env`` (e.g. LD_PRELOAD=libfaketime)."""
    req = {"token": token.hex(), "keytab": str(keytab),
           "cb": None if channel_bindings is None else channel_bindings.hex()}
    proc = subprocess.run([sys.executable, __file__, "accept"], input=json.dumps(req), capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"acceptor child failed: {proc.stderr}")
    res = json.loads(proc.stdout)
    return MitVerdict(res["ok"], res["error"], bytes.fromhex(res["out"]) if res["out"] else None)


def _accept_main() -> int:
    req = json.loads(sys.stdin.read())
    cb = bytes.fromhex(req["cb"]) if req["cb"] is not None else None
    verdict = accept_in_process(bytes.fromhex(req["token"]), req["keytab"], cb, {})
    out = verdict.output_token.hex() if verdict.output_token else None
    sys.stdout.write(json.dumps({"ok": verdict.ok, "error": verdict.error, "out": out}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["accept"]:
        raise SystemExit(_accept_main())
    raise SystemExit(f"usage: {sys.argv[0]} accept  (token request as JSON on stdin)")
