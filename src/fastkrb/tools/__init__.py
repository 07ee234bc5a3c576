"""The operator's tools behind the `fastkrb` command: cli, doctor (with its KDC client), dev, inspect_token,
demo. Nothing in the library or the sidecar imports them."""
