"""Request body limits per route, for the REST and peer apps: 413 with the JSON error body.

FastAPI reads a JSON body whole before the route runs, so without a limit one request could make the daemon
hold any amount of memory. ``BodyLimit`` refuses a declared ``Content-Length`` above the route's limit before
anything is read, and cuts a body that turns out longer (chunked, or lying) as soon as it passes the limit.
Routes that stream their body to disk (the peer's log PUT) are exempt: a log can be GiBs and is
consumed chunk by chunk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from standby.domain.errors import InvalidParameter
from standby.edge.asgi import ASGIApp, Message, Receive, Scope, Send
from standby.edge.errors import error_body
from standby.edge.texts import request_language

#: The JSON bodies of the REST API and the peer protocol are a few KiB; settings and VM definitions included.
DEFAULT_JSON_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Exempt:
    """A route this limit does not apply to (its body is streamed, or the route limits it itself):
    ``method`` and a full-match path pattern."""

    method: str
    path: re.Pattern[str]


class BodyLimit:
    """Wrap ``app``: bodies above ``limit`` bytes get 413, except on the ``exempt`` routes."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_JSON_BODY,
                 exempt: Sequence[Exempt] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``, or answer 413."""
        if scope["type"] != "http" or self._streamed(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, send)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # The app sees the client go away; whatever it answers to that is dropped below.
                    refused = True
                    if not started:
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except Exception:
            if not refused:
                raise

    def _streamed(self, scope: Scope) -> bool:
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        return any(route.method == method and route.path.fullmatch(path) for route in self.exempt)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = InvalidParameter(f"the request body is larger than {self.limit} bytes",
                                 message_id="RequestBodyTooLarge", limit=self.limit)
        language = request_language(Request(scope))
        body = json.dumps(error_body(error, language)).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"content-language", language.encode()),
            # The rest of the body is never read: the connection cannot carry another request.
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
