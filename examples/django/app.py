"""A one-file Django project behind fastkrb.web.wsgi.

    FASTKRB_KEYTAB=/etc/api.keytab python examples/django/app.py      # wsgiref on :8000

In a full project wrap the application in wsgi.py the same way. Django's
``RemoteUserMiddleware`` + ``RemoteUserBackend`` then log the Kerberos principal in as a Django user
(REMOTE_USER is the full principal; pass ``remote_user="short"`` for the bare name of local users).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from fastkrb import Validator
from fastkrb.web.wsgi import NegotiateMiddleware

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
    )


def whoami(request: HttpRequest) -> JsonResponse:
    res = request.META["fastkrb"]  # the AuthResult; REMOTE_USER and AUTH_TYPE are set too
    return JsonResponse({"user": request.META["REMOTE_USER"], "auth_type": request.META["AUTH_TYPE"],
                         "enctype": res.enctype})


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("", whoami), path("health", health)]


def create_application(validator: Any) -> Any:
    from django.core.wsgi import get_wsgi_application

    django.setup()
    return NegotiateMiddleware(get_wsgi_application(), validator, exclude_paths=["/health"])


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    app = create_application(Validator(os.environ.get("FASTKRB_KEYTAB", "fastkrb-dev.keytab")))
    make_server("", 8000, app).serve_forever()
