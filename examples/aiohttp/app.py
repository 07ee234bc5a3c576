"""An aiohttp service behind fastkrb.web.aiohttp.

    FASTKRB_KEYTAB=/etc/api.keytab python examples/aiohttp/app.py      # on :8000
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from fastkrb import Validator
from fastkrb.web.aiohttp import RESULT, USER, negotiate_middleware


async def whoami(request: web.Request) -> web.Response:
    user = request[USER]
    return web.json_response({"principal": user.principal, "kvno": request[RESULT].kvno})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(validator: Any) -> web.Application:
    app = web.Application(middlewares=[negotiate_middleware(validator, exclude_paths=["/health"])])
    app.router.add_get("/", whoami)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    web.run_app(create_app(Validator(os.environ.get("FASTKRB_KEYTAB", "fastkrb-dev.keytab"))), port=8000)
