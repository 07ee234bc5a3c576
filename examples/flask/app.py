"""A Flask API behind fastkrb.web.wsgi.

    FASTKRB_KEYTAB=/etc/api.keytab python examples/flask/app.py        # then: curl --negotiate -u : http://host:8000/

Try it without a KDC: ``fastkrb dev init --spn HTTP/localhost`` writes the keytab, then
``curl -H "$(fastkrb dev header --user alice)" http://localhost:8000/``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from fastkrb import Validator
from fastkrb.web.wsgi import NegotiateMiddleware


def create_app(validator: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def whoami() -> dict[str, Any]:
        res = request.environ["fastkrb"]  # the AuthResult, validated once by the middleware
        return {"user": request.environ["REMOTE_USER"], "enctype": res.enctype, "kvno": res.kvno}

    @app.get("/health")
    def health() -> str:
        return "ok"

    app.wsgi_app = NegotiateMiddleware(app.wsgi_app, validator, exclude_paths=["/health"])  # type: ignore[method-assign]
    return app


if __name__ == "__main__":
    create_app(Validator(os.environ.get("FASTKRB_KEYTAB", "fastkrb-dev.keytab"))).run(port=8000)
