"""An HTTP proxy on 127.0.0.1 that forwards every request to an upstream server but
drops one request header: a service behind it breaks the contract of that header, and
the HTTP harness must notice (`credits conformance` fails)."""

from __future__ import annotations

import attrs
import httpx
from starlette.types import Message, Receive, Scope, Send

FORWARD_TIMEOUT_S = 30.0
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


@attrs.define
class HeaderDroppingProxy:
    """An ASGI app: each request goes to `upstream` without the header `drop`."""

    upstream: str
    drop: str
    dropped: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:  # bounded by the server: uvicorn ends the body or the connection
            message: Message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = []
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name == self.drop.lower():
                self.dropped += 1
            elif name not in HOP_BY_HOP:
                headers.append((name, raw_value.decode("latin-1")))
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S) as client:
            answer = await client.request(scope["method"], url, headers=headers, content=body)
        out = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in answer.headers.multi_items()
            if name.lower() not in HOP_BY_HOP
        ]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})
