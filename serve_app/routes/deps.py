"""What every route module shares: the service of the app it is mounted on, the bearer scheme (for the OpenAPI
document; serve_app/auth.py checks the token before any route runs) and the error responses it documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from ..errors import AUTHENTICATED, error_responses
from ..service import CouncilService


def get_service(request: Request) -> CouncilService:
    """The CouncilService the app was built over (serve_app/api.py: app.state.service)."""
    return request.app.state.service


Service = Annotated[CouncilService, Depends(get_service)]

# Documents the token; never refuses (auto_error=False): the auth middleware has already decided.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="Needed when the deployment sets COUNCILS_API_TOKEN(_FILE) or COUNCILS_ADMIN_TOKEN(_FILE)")
AUTH = [Security(bearer)]


def errors(*codes: int) -> dict:
    """`responses=` of a route behind the token: 400, 401, 413, 503 and these."""
    return error_responses(*AUTHENTICATED, *codes)


ADMIN_WRITE = (403, 404, 409, 422)  # council writes: the admin scope, the council, the config's, the body
DELIBERATING = (404, 409, 422, 429, 504)  # starts a deliberation: its council, Idempotency-Key, limits, caps, deadline
JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
