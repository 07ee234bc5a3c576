"""A FastAPI service behind fastkrb.web.asgi.

    FASTKRB_KEYTAB=/etc/api.keytab uvicorn --factory examples.fastapi.app:main --port 8000
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from fastkrb import Validator
from fastkrb.web.asgi import KerberosUser, NegotiateMiddleware


def current_user(request: Request) -> KerberosUser:
    user: KerberosUser = request.user  # set by NegotiateMiddleware
    return user


def create_app(validator: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[KerberosUser, Depends(current_user)]) -> dict[str, Any]:
        return {"principal": user.principal, "name": user.name, "realm": user.realm,
                "enctype": user.result.enctype}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # one Validator for every request; exclude what load balancers probe
    app.add_middleware(NegotiateMiddleware, validator=validator, exclude_paths=["/health"])
    return app


def main() -> FastAPI:
    return create_app(Validator(os.environ.get("FASTKRB_KEYTAB", "fastkrb-dev.keytab")))
