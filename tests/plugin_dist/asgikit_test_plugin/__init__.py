"""A third-party middleware for the tests, registered under ``asgikit.middleware``.

``tests/plugin_dist`` is a tiny distribution laid out as installed: on ``sys.path``,
``importlib.metadata`` finds its ``.dist-info`` and the ``stamp`` entry point in it.
"""

from asgikit.types import ASGIApp, Message, Receive, Scope, Send


class StampMiddleware:
    """Add a header to every http response.

    Args:
        app: The ASGI app to wrap.
        header: The header's name.
        value: The header's value.
    """

    def __init__(self, app: ASGIApp, *, header: str = "x-stamp", value: str = "stamped") -> None:
        if not header or header != header.lower():
            raise ValueError(f"header {header!r} must be a non-empty lowercase name")
        self.app = app
        self.header = (header.encode("ascii"), value.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_stamped)
