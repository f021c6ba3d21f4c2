"""ASGI middleware: security headers on every answer, and the request body size limit.

Headers:
``nosniff`` stops browsers from guessing a JSON body is HTML; ``DENY`` forbids framing (clickjacking);
``no-referrer`` keeps ids in URLs out of other sites' logs; ``no-store`` keeps per-user answers out of
shared caches. Both are plain ASGI (not ``BaseHTTPMiddleware``), so they add no task per request.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openami.api.problems import problem_response

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413 problem, before they are buffered.

    A declared ``Content-Length`` over the limit is answered at once. Otherwise the bytes are counted as
    the app receives them, and the first chunk over the limit raises ``HTTPException(413)``, which
    FastAPI's body reading passes on untouched to the problem+json handlers. (FastAPI's own
    ``max_body_size`` answers in plain text from inside each route, out of reach of those handlers.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(Request(scope), 413, self._detail())
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"
