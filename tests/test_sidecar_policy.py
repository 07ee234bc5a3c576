"""Policies in a real ``fastkrb serve``: /auth?allowed_users=..., ?policy=NAME ([policies.NAME]), /auth/policy/NAME,
403 forbidden, the PAC identity headers, the group map and its reload, the decision log, the metrics, and the
same through the binary protocol (fastkrb.client).

Tokens are minted from the daemon's keytab; the AD-like ones carry a PAC with a LOGON_INFO (user RID 1104 in a
domain SID, group RIDs), which the daemon (plain ``python -m fastkrb serve``) decodes into the native
``Identity`` and checks with the native ``SidSet``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastkrb import Forbidden, GroupNames, KerberosError, Validator
from fastkrb.client import Client, RemoteIdentity, policy_query
from fastkrb.groups import write_map
from fastkrb.sidecar import protocol
from fastkrb.sidecar.config import ConfigError, load_config, main_check
from fastkrb.sidecar.http import GROUPS_MAX_BYTES, groups_header
from fastkrb.sidecar.policies import QUERY_CACHE, PolicyBook, PolicyError, parse_policy_query
from fastkrb.testing import make_keytab, mint
from support.sidecar import Sidecar, service_keytab

SERVICE = "HTTP/api.corp.example@CORP.EXAMPLE"
DOM = "S-1-5-21-1004336348-1177238915-682003330"
READERS, WRITERS = f"{DOM}-1200", f"{DOM}-1201"
MAP = {READERS: "CORP\\api-readers", WRITERS: "CORP\\api-writers", f"{DOM}-513": "CORP\\Domain Users"}


@pytest.fixture(scope="module")
def keytab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return service_keytab(tmp_path_factory.mktemp("kt"), SERVICE, 21)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy-sidecar")


@pytest.fixture(scope="module")
def sidecar(workdir: Path, keytab: Path) -> Iterator[Sidecar]:
    write_map(workdir / "groups.json", MAP)
    (workdir / "fastkrb.toml").write_text(f"""
[serve]
group_names = "{workdir / 'groups.json'}"
remote_groups = "name"

[policies.readers]
allowed_groups = ["CORP\\\\api-readers"]

[policies.corp]
allowed_realms = ["CORP.EXAMPLE"]
allowed_users = ["alice", "bob"]
""")
    args = ("--replay-cache", "memory", "--config", str(workdir / "fastkrb.toml"))
    with Sidecar(workdir, keytab, args=args) as sc:
        yield sc


def ad_header(keytab: Path, client: str = "alice@CORP.EXAMPLE", groups: tuple[int, ...] = (513, 1200)) -> str:
    """A fresh AD-like token: a PAC with LOGON_INFO (user RID 1104) and a UPN."""
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1104, "group_rids": groups, "logon_domain_name": "CORP"}}
    return mint(str(keytab), client=client, server=SERVICE, pac=pac, now=time.time() + 1).header


def mit_header(keytab: Path, client: str = "alice@CORP.EXAMPLE") -> str:
    """A fresh token without PAC logon information, as an MIT or Heimdal KDC issues."""
    return mint(str(keytab), client=client, server=SERVICE, now=time.time() + 1).header


def auth(sc: Sidecar, path: str, header: str | None) -> tuple[int, dict[str, str], Any]:
    status, h, body = sc.http("GET", path, {"Authorization": header} if header else None)
    return status, h, (json.loads(body) if body else None)


# -- HTTP ---------------------------------------------------------------------------------------------------

def test_allowed_users_from_the_query(sidecar: Sidecar, keytab: Path) -> None:
    status, h, _ = auth(sidecar, "/auth?allowed_users=alice@CORP.EXAMPLE,carol@CORP.EXAMPLE", mit_header(keytab))
    assert status == 200 and h["x-remote-user"] == "alice"
    assert h["x-remote-policy"] == "allowed_users=alice@CORP.EXAMPLE,carol@CORP.EXAMPLE"
    status, h, body = auth(sidecar, "/auth?allowed_users=bob", mit_header(keytab))
    assert status == 403
    assert h["x-auth-error"] == "forbidden" and "www-authenticate" not in h and h["content-type"] == "application/json"
    assert body["code"] == "forbidden" and body["constraint"] == "users" and body["policy"] == "allowed_users=bob"
    assert "alice@CORP.EXAMPLE is refused" in body["cause"]


def test_group_policy_by_name_with_the_pac_identity(sidecar: Sidecar, keytab: Path) -> None:
    status, h, _ = auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=(513, 1200, 1300)))
    assert status == 200
    assert h["x-remote-policy"] == "readers"
    assert h["x-remote-sid"] == f"{DOM}-1104"
    assert h["x-remote-upn"] == "alice@corp.example"
    groups = h["x-remote-groups"].split(",")
    assert {"CORP\\Domain Users", "CORP\\api-readers", f"{DOM}-1300"} <= set(groups)   # unmapped: the SID
    assert "x-remote-groups-truncated" not in h
    status, h, body = auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=(513, 1201)))
    assert status == 403 and h["x-auth-error"] == "forbidden"
    assert body["policy"] == "readers" and body["constraint"] == "groups"
    assert "CORP\\api-readers" in body["cause"] and "group SIDs" in body["cause"]


def test_a_ticket_without_pac_is_refused_by_a_group_policy(sidecar: Sidecar, keytab: Path) -> None:
    status, h, body = auth(sidecar, "/auth?policy=readers", mit_header(keytab))
    assert status == 403 and h["x-auth-error"] == "forbidden"
    assert "no PAC logon information" in body["cause"]
    # and no PAC: no SID, UPN or groups on a success either
    status, h, _ = auth(sidecar, "/auth?policy=corp", mit_header(keytab))
    assert status == 200 and h["x-remote-policy"] == "corp"
    assert not {"x-remote-sid", "x-remote-upn", "x-remote-groups"} & set(h)


def test_envoy_path_names_the_policy_and_the_client_query_is_not_read(sidecar: Sidecar, keytab: Path) -> None:
    status, h, _ = auth(sidecar, "/auth/policy/readers/api/x?y=1", ad_header(keytab, groups=(513, 1201)))
    assert status == 403 and h["x-auth-error"] == "forbidden"
    # /auth/<client's path>?<client's query>: a client cannot pick a policy this way (it could only restrict
    # itself, but an operator's policy must come from the operator)
    status, h, _ = auth(sidecar, "/auth/api/x?allowed_users=nobody", mit_header(keytab))
    assert status == 200 and "x-remote-policy" not in h


@pytest.mark.parametrize(("path", "why"), [
    ("/auth?policy=nope", "no policy named 'nope'"),
    ("/auth?allowed_group=CORP%5Capi-readers", "unknown /auth parameter 'allowed_group'"),
    ("/auth?policy=readers&allowed_users=alice", "not both"),
    ("/auth?allowed_groups=CORP%5Cnobody", "no group named"),
    ("/auth?allowed_groups=S-1-5-21-x", "not a well-formed SID"),
])
def test_a_policy_that_cannot_be_applied_fails_closed_as_internal(sidecar: Sidecar, keytab: Path, path: str,
                                                                   why: str) -> None:
    status, h, body = auth(sidecar, path, mit_header(keytab))
    assert status == 500 and h["x-auth-error"] == "internal"
    assert why in body["cause"]


def test_other_query_parameters_are_ignored(sidecar: Sidecar, keytab: Path) -> None:
    status, h, _ = auth(sidecar, "/auth?uri=/x&allowed_users=alice", mit_header(keytab))
    assert status == 200 and h["x-remote-policy"] == "allowed_users=alice"


def test_groups_header_is_bounded(sidecar: Sidecar, keytab: Path) -> None:
    many = tuple(range(2000, 2400))                                  # 400 unmapped groups: SIDs, ~46 bytes each
    status, h, _ = auth(sidecar, "/auth", ad_header(keytab, groups=(513, *many)))
    assert status == 200
    value = h["x-remote-groups"]
    assert len(value.encode()) <= GROUPS_MAX_BYTES and not value.endswith(",")
    items = value.split(",")
    assert all(i.startswith(DOM) or i.startswith("CORP\\") for i in items)
    assert int(h["x-remote-groups-truncated"]) >= 401 > len(items)


def test_the_map_is_reloaded_when_its_file_changes(sidecar: Sidecar, keytab: Path, workdir: Path) -> None:
    member = (513, 1400)
    assert auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=member))[0] == 403
    write_map(workdir / "groups.json", {**MAP, READERS: "CORP\\api-readers-old", f"{DOM}-1400": "CORP\\api-readers"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=member))[0] == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the new map was not taken")
    assert auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=(513, 1200)))[0] == 403
    (workdir / "groups.json").write_text("{broken")
    time.sleep(0.6)
    assert auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=member))[0] == 200   # kept in service
    write_map(workdir / "groups.json", MAP)
    time.sleep(0.6)
    events = [e for e in sidecar.events() if e.get("event") == "group_names_reload"]
    assert {e["result"] for e in events} >= {"ok", "refused"}
    health = json.loads(sidecar.http("GET", "/healthz")[2])
    assert health["policies"] == ["corp", "readers"] and health["group_names"]["groups"] == 3


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_decisions_are_logged_and_counted_per_policy(sidecar: Sidecar, keytab: Path) -> None:
    before = sidecar.http("GET", "/metrics")[2].decode()
    assert auth(sidecar, "/auth?policy=readers", ad_header(keytab))[0] == 200
    assert auth(sidecar, "/auth?policy=readers", ad_header(keytab, groups=(513,)))[0] == 403
    assert auth(sidecar, "/auth?policy=readers", mit_header(keytab))[0] == 403
    after = sidecar.http("GET", "/metrics")[2].decode()

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert delta("fastkrb_decisions_total", outcome="forbidden", code="forbidden") == 2
    assert delta("fastkrb_policy_decisions_total", policy="readers", outcome="allowed") == 1
    assert delta("fastkrb_policy_decisions_total", policy="readers", outcome="forbidden") == 2
    time.sleep(0.5)   # lines are flushed on the daemon's tick
    lines = [e for e in sidecar.events() if e.get("event") == "decision" and e.get("policy") == "readers"][-3:]
    assert [e["outcome"] for e in lines] == ["accepted", "forbidden", "forbidden"]
    assert lines[1]["code"] == "forbidden" and lines[1]["constraint"] == "groups" and lines[1]["group_count"] >= 1
    assert lines[1]["user_sid"] == f"{DOM}-1104" and lines[1]["server"] == SERVICE
    assert lines[2]["group_count"] == 0 and "no PAC" in lines[2]["cause"]


# -- binary protocol ----------------------------------------------------------------------------------------

def test_client_gets_the_identity_and_applies_policies(sidecar: Sidecar, keytab: Path) -> None:
    with Client(sidecar.socket, group_names=True) as c:
        res = c.validate(ad_header(keytab, groups=(513, 1200)), policy="readers")
        assert res.policy == "readers"
        ident = res.identity
        assert isinstance(ident, RemoteIdentity)
        assert ident.user_sid == f"{DOM}-1104" and ident.upn == "alice@corp.example" and not ident.upn_implicit
        assert ident.logon_name == "alice" and ident.logon_domain == "CORP"
        assert READERS in ident.group_sids and ident.group_count >= 2
        assert ident.group_names is not None
        assert dict(zip(ident.group_sids, ident.group_names, strict=True))[READERS] == "CORP\\api-readers"
        assert ident.member_of({READERS}) and not ident.member_of({WRITERS})
        assert res.to_dict()["identity"]["user_sid"] == f"{DOM}-1104"
        with pytest.raises(Forbidden) as info:
            c.validate(ad_header(keytab, groups=(513, 1201)), policy="readers")
        assert info.value.details["constraint"] == "groups" and info.value.details["policy"] == "readers"
        with pytest.raises(Forbidden):
            c.validate(mit_header(keytab), allowed_users=["bob"])
        assert c.validate(mit_header(keytab), allowed_users=["alice"]).identity is None
        with pytest.raises(KerberosError) as bad:
            c.validate(mit_header(keytab), policy="nope")
        assert bad.value.code == "internal" and "no policy named 'nope'" in bad.value.cause
        many = c.validate_many([ad_header(keytab), ad_header(keytab, groups=(513,))], policy="readers")
        assert [type(x).__name__ for x in many] == ["Accepted", "Forbidden"]


def test_client_protocol_1_and_identity_off(sidecar: Sidecar, keytab: Path) -> None:
    with Client(sidecar.socket, protocol=1) as c:
        res = c.validate(ad_header(keytab))
        assert res.identity is None and res.policy is None and res.client == "alice@CORP.EXAMPLE"
        with pytest.raises(ValueError, match="protocol 2"):
            c.validate(ad_header(keytab), policy="readers")
    with Client(sidecar.socket, identity=False) as c:
        res = c.validate(ad_header(keytab), policy="readers")
        assert res.identity is None and res.policy == "readers"


# -- pieces ---------------------------------------------------------------------------------------------------

def test_wire_codec_round_trips_the_identity() -> None:
    kt = make_keytab((SERVICE,))
    v = Validator(kt, replay_cache="none")
    names = GroupNames(MAP)
    # every field set, the UPN constructed (no userPrincipalName: UPN_DNS_INFO flag U)
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1104, "group_rids": (513, 1200), "user_name": "erin",
                          "logon_domain_name": "CORP"}, "upn": "erin@corp.example", "upn_implicit": True}
    res = v.validate(mint(kt, client="erin@CORP.EXAMPLE", server=SERVICE, pac=pac).header)
    assert res.identity is not None and res.identity.upn_implicit
    frame = protocol.encode_accepted_ex(7, res, "readers", True, names)
    ((kind, rid, payload),) = protocol.iter_frames(frame, 1 << 20)
    assert (kind, rid) == (protocol.ACCEPTED_EX, 7)
    got = protocol.decode_accepted_ex(payload)
    assert got.policy == "readers" and got.client == "erin@CORP.EXAMPLE"
    assert got.identity == RemoteIdentity(f"{DOM}-1104", f"{DOM}-513", (f"{DOM}-513", READERS), 2, "erin", "CORP",
                                          "CORP.EXAMPLE", "erin@corp.example", True,
                                          ("CORP\\Domain Users", "CORP\\api-readers"))
    # no UPN_DNS_INFO: no DNS domain, no UPN; an ExtraSid the map does not name travels as ""
    pac = {"logon_info": {"domain_sid": DOM, "user_rid": 1104, "group_rids": (513,), "user_name": "erin",
                          "logon_domain_name": "CORP", "extra_sids": ("S-1-5-21-99-98-97-1200",)}, "upn": None}
    bare = v.validate(mint(kt, client="erin@CORP.EXAMPLE", server=SERVICE, pac=pac).header)
    ((_, _, bare_payload),) = protocol.iter_frames(protocol.encode_accepted_ex(8, bare, None, True, names), 1 << 20)
    assert protocol.decode_accepted_ex(bare_payload).identity == RemoteIdentity(
        f"{DOM}-1104", f"{DOM}-513", (f"{DOM}-513", "S-1-5-21-99-98-97-1200"), 2, "erin", "CORP", None, None, False,
        ("CORP\\Domain Users", ""))
    for cut in (1, 5, 20, len(payload) - 1):
        with pytest.raises(protocol.FrameError):
            protocol.decode_accepted_ex(payload[:cut])
    req = protocol.encode_validate_ex(9, b"tok", b"cb", "policy=readers", protocol.WANT_IDENTITY)
    ((kind, rid, payload),) = protocol.iter_frames(req, 1 << 20)
    assert kind == protocol.VALIDATE_EX
    assert protocol.decode_validate_ex(payload) == protocol.ValidateEx(1, b"cb", b"policy=readers", b"tok")


def test_policy_query_text() -> None:
    assert policy_query("readers") == "policy=readers"
    assert policy_query(allowed_users=["alice@CORP.EXAMPLE"], allowed_groups=["CORP\\api readers"]) == \
        "allowed_users=alice@CORP.EXAMPLE&allowed_groups=CORP\\api%20readers"
    assert parse_policy_query(policy_query(allowed_groups=["CORP\\api readers"])) == \
        (None, {"allowed_groups": ["CORP\\api readers"]})
    with pytest.raises(ValueError):
        policy_query("readers", allowed_users=["a"])
    with pytest.raises(ValueError):
        policy_query(allowed_users=["a,b"])


def test_query_policies_are_built_once_and_the_cache_is_bounded() -> None:
    book = PolicyBook({"readers": {"allowed_groups": [READERS]}})
    p = book.resolve(b"allowed_users=alice")
    assert p is not None and book.resolve(b"allowed_users=alice") is p
    assert book.resolve(b"policy=readers") is book.named["readers"]
    assert book.resolve(b"uri=/x") is None
    for i in range(QUERY_CACHE + 10):
        book.resolve(b"allowed_users=u%d" % i)
    assert len(book._queries) == QUERY_CACHE
    with pytest.raises(PolicyError):
        book.resolve(b"policy=nope")


def test_groups_header_cuts_at_a_whole_item() -> None:
    sids = tuple(f"{DOM}-{i}" for i in range(300))
    block = groups_header(sids, None, limit=200)
    head, _, rest = block.partition(b"\r\n")
    value = head.split(b": ", 1)[1]
    assert len(value) <= 200 and value.split(b",")[-1].decode() in sids
    assert rest == b"X-Remote-Groups-Truncated: 300\r\n"
    assert groups_header(sids[:2], GroupNames({sids[0]: "CORP\\a"})) == \
        f"X-Remote-Groups: CORP\\a,{sids[1]}\r\n".encode()


def test_policies_in_the_config_file(tmp_path: Path, keytab: Path) -> None:
    cfg_file = tmp_path / "f.toml"
    write_map(tmp_path / "g.json", MAP)
    cfg_file.write_text(f'[serve]\nkeytab = "{keytab}"\ngroup_names = "{tmp_path / "g.json"}"\n'
                        '[policies.readers]\nallowed_groups = ["api-readers"]\n')
    cfg = load_config({"config": str(cfg_file)}, env={})
    assert cfg.policies == {"readers": {"allowed_groups": ["api-readers"]}}
    assert PolicyBook.from_config(cfg).named["readers"].resolved == (READERS,)
    for text, message in (('[policies.x]\nallowed_group = ["a"]\n', "unknown key"),
                          ('[policies."a b"]\nallowed_users = ["a"]\n', "policy name"),
                          ('[policies.x]\nallowed_users = "alice"\n', "array of non-empty strings")):
        cfg_file.write_text(f'keytab = "{keytab}"\n' + text)
        with pytest.raises(ConfigError, match=message):
            load_config({"config": str(cfg_file)}, env={})
    with pytest.raises(ConfigError, match="remote_groups = name needs group_names"):
        load_config({"keytab": str(keytab), "remote_groups": "name"}, env={})


def test_check_names_a_group_the_map_lacks(tmp_path: Path, keytab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_map(tmp_path / "g.json", MAP)
    cfg_file = tmp_path / "f.toml"
    cfg_file.write_text(f'keytab = "{keytab}"\nsocket = "{tmp_path / "s.sock"}"\n'
                        f'group_names = "{tmp_path / "g.json"}"\n'
                        '[policies.ops]\nallowed_groups = ["CORP\\\\api-ops"]\n')
    assert main_check(load_config({"config": str(cfg_file)}, env={})) == 2
    assert "policies: allowed_groups of policy 'ops': no group named 'CORP\\api-ops'" in \
        capsys.readouterr().out
