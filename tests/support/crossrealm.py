"""Two MIT realms joined by a one-way trust, for the cross-realm tests."""

from __future__ import annotations

from pathlib import Path

from support.krb5conf import ALL_ENCTYPES, keysalt_list
from support.mit import MitRealm
from support.realm import Lab


def build_cross_lab(workdir: Path, a: str = "ALPHA.TEST", b: str = "BETA.TEST") -> Lab:
    """Two MIT realms, A trusting nothing and B trusting A: krbtgt/B@A with the same key in both databases.

    alice@A gets a ticket for HTTP/api.beta.test@B through A's KDC (capaths: A -> B directly). The lab's
    realm is A (the client's view, whose krb5.conf knows both); ``others[0]`` is B.
    """
    ra = MitRealm(name=a, workdir=workdir / "a", domain=a.lower())
    rb = MitRealm(name=b, workdir=workdir / "b", domain=b.lower())
    capaths = {a: {b: "."}, b: {a: "."}}
    ra.peers, rb.peers = [rb.ref], [ra.ref]
    ra.capaths = rb.capaths = capaths
    ra.start()
    lab = Lab(ra, others=[rb])
    try:
        rb.start()
        trust = f"krbtgt/{b}@{a}"
        secret = "cross-realm-Trust-1"
        for r in (ra, rb):
            r.kadmin(f"addprinc -pw {secret} -e {keysalt_list(ALL_ENCTYPES)} {trust}")
        svc = rb.add_service(rb.service("api"))
        lab.services["api"] = svc
        lab.keytabs["api"] = rb.export(rb.keytab("api"), svc)
        local = ra.add_service(ra.service("local"))
        lab.services["local"] = local
        lab.keytabs["local"] = ra.export(ra.keytab("local"), local)
        lab.ccaches["default"] = ra.kinit(ra.ccache("default"))
        ra.fetch_ticket(lab.ccaches["default"], svc)
        lab.ticket_enctypes["api"] = ra.ticket_enctype(lab.ccaches["default"], svc)
        lab.extra["trust"] = trust
    except BaseException:
        lab.stop()
        raise
    return lab
