"""Live settings (the Ingress deployment's `user_config`, actors.specs.RuntimeSettings) applied to requests."""

from __future__ import annotations

from actors.specs import DeliberationRequest, RuntimeSettings

from .errors import ApiError


def effective_request(request: DeliberationRequest, settings: RuntimeSettings) -> DeliberationRequest:
    """The request with the live default timeout filled in; 422 when it asks for more than max_timeout_s."""
    constraints = request.constraints
    if "timeout_s" in constraints.model_fields_set:
        if constraints.timeout_s > settings.max_timeout_s:
            raise ApiError(422, f"constraints.timeout_s={constraints.timeout_s:g} is over the limit of "
                                f"{settings.max_timeout_s:g}s")
        return request
    return request.model_copy(update={
        "constraints": constraints.model_copy(update={"timeout_s": settings.default_timeout_s})})
