"""Request-size limits enforced while bodies stream in, before the app buffers them.

Each request's body has a size limit, and all requests together have a budget of bytes
in flight (received and held until their answer is sent): many concurrent uploads just
under the per-request limit must not exhaust the server's memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BodySizeLimit"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class _TooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


BUSY_RETRY_AFTER = 1  # seconds a request refused for the in-flight budget is asked to wait


class BodySizeLimit:
    """ASGI middleware answering 413 for bodies over ``limit_for(path)`` bytes, 503 over the in-flight budget.

    A declared ``Content-Length`` over the limit is refused before reading anything;
    a chunked body is counted as it arrives and refused as soon as it passes the limit.
    Bytes declared or received are held against ``max_inflight_bytes`` until the answer
    is sent; a request that would pass the budget gets 503 with ``Retry-After``.
    """

    def __init__(
        self, app: Callable[..., Any], *, limit_for: Callable[[str], int], max_inflight_bytes: int | None = None
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight = 0  # one event loop runs every request's middleware: no lock needed

    def _reserve(self, size: int) -> bool:
        if size and self.max_inflight_bytes is not None and self.inflight + size > self.max_inflight_bytes:
            return False
        self.inflight += size
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _reply(send, 400, "Content-Length is not a number")
            return
        if declared is not None and int(declared) > limit:
            await _reply(send, 413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
            return
        body = _Body(self, receive, limit=limit, reserved=int(declared or 0))
        if not self._reserve(body.reserved):
            await _busy(send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, f"request body exceeds the limit of {limit} bytes")
        except _OverBudget:
            if not started:
                await _busy(send)
        finally:
            self.inflight -= body.reserved


class _Body:
    """One request's body as it streams in, counted against its limit and the shared budget."""

    def __init__(self, owner: BodySizeLimit, receive: Receive, *, limit: int, reserved: int) -> None:
        self.owner, self._receive, self.limit, self.reserved = owner, receive, limit, reserved
        self.received = 0

    async def receive(self) -> Message:
        message: Message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise _TooLarge
            if self.received > self.reserved:  # more than declared, or no Content-Length
                if not self.owner._reserve(self.received - self.reserved):
                    raise _OverBudget
                self.reserved = self.received
        return message


async def _busy(send: Send) -> None:
    detail = f"the server is receiving too much at once; retry after {BUSY_RETRY_AFTER} s"
    await _reply(send, 503, detail, headers=[(b"retry-after", str(BUSY_RETRY_AFTER).encode())])


async def _reply(send: Send, status: int, detail: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
