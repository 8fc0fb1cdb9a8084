"""Starlette's body-limit names for asgikit's body limit middleware, for Starlette's own
suite.

``RequestBodyLimitMiddleware`` is ``BodyLimitMiddleware`` itself (the suite passes
``max_body_size`` by keyword, as asgikit requires). ``MAX_BODY_SIZE_SCOPE_KEY`` is
Starlette's scope key, which asgikit neither reads nor writes (docs/body_limit.md says
why); the suite checks that the middleware leaves it alone.
"""

from __future__ import annotations

from typing import Final

from asgikit.middleware.body_limit import BodyLimitMiddleware

__all__ = ["MAX_BODY_SIZE_SCOPE_KEY", "RequestBodyLimitMiddleware"]

MAX_BODY_SIZE_SCOPE_KEY: Final = "starlette.max_body_size"

RequestBodyLimitMiddleware = BodyLimitMiddleware
