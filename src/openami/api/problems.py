"""RFC 9457 problem details for every error the API returns.

Every failure leaves as ``application/problem+json`` with ``type`` (a stable URI naming the kind of
problem, not a page to fetch), ``title``, ``status``, ``detail`` and ``instance`` (the request path).
Domain and database exceptions are mapped here, once, by class (``ERROR_MAP``), so routes simply let
``NotFound``/``Conflict``/``PermissionDenied``... propagate. Unexpected exceptions become a 500 whose body
says nothing about the cause; the cause goes to the log with the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from openami.security.errors import AuthenticationFailed, InvalidInput, PermissionDenied, SecurityError
from openami.store.errors import Conflict, InvalidReference, NotFound, StoreError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://openami.org/problems/"

#: Exception class -> (status, problem type slug), looked up along the exception's MRO (most specific
#: first). OperationalError is the database being unreachable or locked: 503, worth retrying.
ERROR_MAP: Mapping[type[Exception], tuple[int, str]] = {
    AuthenticationFailed: (401, "unauthorized"),
    PermissionDenied: (403, "forbidden"),
    InvalidInput: (422, "validation-error"),
    NotFound: (404, "not-found"),
    Conflict: (409, "conflict"),
    InvalidReference: (422, "invalid-reference"),
    DataError: (422, "invalid-value"),
    OperationalError: (503, "service-unavailable"),
    SecurityError: (500, "internal-error"),
    StoreError: (500, "internal-error"),
}

_DRIVER_DETAILS = {
    422: "the request contains a value the database cannot store",
    503: "the database is unavailable; try again later",
}

_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "content-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    500: "internal-error",
    503: "service-unavailable",
}


class Problem(Exception):
    """Raise from a route for a problem no domain exception describes (bad cursor, end before start)."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or _SLUGS.get(status, "error")


def problem_response(
    request: Request,
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response for ``status``; ``extra`` adds extension members (like ``errors``)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or _SLUGS.get(status, "error")),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        "instance": request.url.path,
        **(extra or {}),
    }
    response_headers = dict(headers or {})
    if status == 401:
        response_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=response_headers, media_type=PROBLEM_MEDIA_TYPE)


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Where and what, without echoing the (possibly huge or hostile) input back."""
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    for cls in type(exc).__mro__:
        if cls in ERROR_MAP:
            status, slug = ERROR_MAP[cls]
            break
    else:  # pragma: no cover - only registered for the classes in ERROR_MAP
        status, slug = 500, "internal-error"
    if status == 500:
        return await _unexpected(request, exc)
    if isinstance(exc, DBAPIError):  # the driver's message may quote SQL and data: say what, not how
        log.warning("database error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        detail = _DRIVER_DETAILS[status]
    else:
        detail = str(exc)
    return problem_response(request, status, detail, slug=slug)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc.status, exc.detail, slug=exc.slug)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc.errors())
    return problem_response(request, 422, "the request is not valid", extra={"errors": errors})


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(request, exc.status_code, detail, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "an internal error occurred; it has been logged")


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` through the problem+json renderers above."""
    for cls in ERROR_MAP:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri",
            "description": "Stable identifier of the kind of problem.",
        },
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The request path."},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "Validation errors (422)."},
    },
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API does: every error is ``application/problem+json``.

    FastAPI documents its 422 as plain JSON ``HTTPValidationError``; clients generated from the document
    would then fail to parse our errors. Operations with a body also answer 400 (unparseable) and 413.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = _PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "The body is not valid JSON."})
                    responses.setdefault("413", {"description": "The body is larger than 1 MiB."})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = content
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
