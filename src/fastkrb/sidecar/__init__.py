"""``fastkrb serve``: the sidecar auth daemon (docs/sidecar.md; wire protocol in docs/protocol.md).

Modules: protocol (the binary codec, shared with fastkrb.client: the only module a client loads),
config (flags > TOML > env), workers (supervisor, sockets, fork), app (one worker's life), conn (one
connection: limits, fairness), http and binary (the two front doors), engine (validate + count + log),
metrics, log. Importing this package is cheap: nothing here starts a loop or opens a socket.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def main(args: Any) -> int:
    """Run ``fastkrb serve`` with parsed CLI arguments (an argparse Namespace)."""
    from fastkrb.sidecar.workers import main as _main

    return _main(args)
