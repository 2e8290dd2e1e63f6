"""A small MCP server of our own for the tests: well-behaved tools and
faulty ones (a hang, a crash, a huge answer, a malformed result). Built on
the official SDK's server side, so the wire protocol is the real one.

    python -m tests.fakes.mcp_server --stdio
    python -m tests.fakes.mcp_server --port 8123     (streamable HTTP at /mcp)

``malformed`` is answered by a thin ASGI layer in front of the SDK's app
with a JSON-RPC result that breaks the protocol's schema, which a
well-behaved SDK server could never send."""

from __future__ import annotations

import argparse
import base64
import json
import os
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as McpToolError
from mcp.server.mcpserver.utilities.types import Image

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

server = MCPServer("arium-test-server", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def pid() -> str:
    """The server process's id (tells a restarted server from the first)."""
    return str(os.getpid())


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after a while (a hang, for a long enough while)."""
    await anyio.sleep(seconds)
    return "finally"


@server.tool()
def crash() -> str:
    """The process dies mid-call."""
    os._exit(3)


@server.tool()
def huge(characters: int) -> str:
    """An answer of the given size."""
    return "x" * characters


@server.tool()
def picture() -> Image:
    """An image, which a text model cannot read."""
    return Image(data=PIXEL, format="png")


@server.tool()
def fail(reason: str) -> str:
    """A tool that reports an error."""
    raise McpToolError(reason)


@server.tool()
def whoami(ctx: Context) -> str:
    """What the client said about its user in the request metadata."""
    meta = ctx.request_context.meta or {}
    return json.dumps(dict(meta).get("arium/user"))


@server.tool()
def call_key(ctx: Context) -> str:
    """The idempotency key the client sent with this call, if any."""
    meta = ctx.request_context.meta or {}
    return json.dumps(dict(meta).get("arium/idempotency_key"))


@server.tool()
def malformed() -> str:
    """Answered by the ASGI layer, never by this function."""
    return "unreachable"


def malformed_layer(app: Any) -> Any:
    """Answers a tools/call of ``malformed`` with a result whose content is
    not a list; everything else goes to the SDK's app."""

    async def layer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("params", {}).get("name") == "malformed":
            answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": {"content": "not a list"}})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return layer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.stdio:
        server.run("stdio")
        return
    import uvicorn

    app = server.streamable_http_app(json_response=True)
    uvicorn.run(malformed_layer(app), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
