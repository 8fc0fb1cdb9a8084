"""What a reloading development server serves while the config file or the app is broken.

Under ``asgikit serve --reload`` a mistake saved in the config file or the app's code must
not take the server down: the server process would exit and the developer would have to
start it again by hand. Instead the error is printed once, every request is answered
with it, and the reloader, still watching, restarts the process when a file changes.
"""

from __future__ import annotations

from asgikit.types import ASGIApp, Receive, Scope, Send

__all__ = ["error_app"]


def error_app(text: str) -> ASGIApp:
    """An app answering every request with a 500 that shows *text* (lifespan accepted)."""
    body = (
        "asgikit could not build the app; fix the file and save: the server restarts.\n\n"
        + text
        + "\n"
    ).encode()

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})

    return broken
