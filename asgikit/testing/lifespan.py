"""The lifespan part of the test driver: start-up and shutdown around a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from asgikit.testing.scopes import lifespan_scope
from asgikit.types import ASGIApp, Message, Scope

__all__ = ["LifespanFailed", "LifespanSession", "lifespan", "run_lifespan"]


class LifespanFailed(Exception):
    """The app answered ``lifespan.*.failed``."""


@dataclass
class LifespanSession:
    """A running lifespan: its state dict and the messages the app sent."""

    scope: Scope
    state: dict[str, Any]
    messages: list[Message] = field(default_factory=list)


@asynccontextmanager
async def lifespan(
    app: ASGIApp, *, state: dict[str, Any] | None = None
) -> AsyncIterator[LifespanSession]:
    """Run *app*'s lifespan around the block: start-up on entry, shutdown on exit.

    Raises ``LifespanFailed`` when the app answers ``*.failed``; an exception the app
    raises propagates. ``session.state`` is the dict to pass as ``state=`` to the
    request scopes.
    """
    state = {} if state is None else state
    session = LifespanSession(scope=lifespan_scope(state), state=state)
    driver = _LifespanDriver(app, session)
    with driver.to_app, driver.from_driver, driver.answers, driver.answer_stream:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(driver.run_app)
                await driver.step("startup")
                yield session
                await driver.step("shutdown")
        except BaseExceptionGroup as group:
            # The task group wraps what the app raised; hand the test the error itself.
            if len(group.exceptions) != 1:
                raise
            error: BaseException | None = group.exceptions[0]
        else:
            error = None
        if error is not None:
            raise error

        if driver.app_errors:  # the app raised after it answered the shutdown
            raise driver.app_errors[0]


class _LifespanDriver:
    """The server's side of a lifespan: sends each event and waits for the answer."""

    def __init__(self, app: ASGIApp, session: LifespanSession) -> None:
        self.app = app
        self.session = session
        self.to_app, self.from_driver = anyio.create_memory_object_stream[Message](2)
        self.answers, self.answer_stream = anyio.create_memory_object_stream[Message](2)
        self.app_errors: list[Exception] = []

    async def receive(self) -> Message:
        return await self.from_driver.receive()

    async def send(self, message: Message) -> None:
        self.session.messages.append(message)
        await self.answers.send(message)

    async def run_app(self) -> None:
        try:
            await self.app(self.session.scope, self.receive, self.send)
        except Exception as exc:  # handed to the test by step(), not via the task group
            self.app_errors.append(exc)
        finally:
            self.answers.close()

    async def step(self, event: str) -> None:
        await self.to_app.send({"type": f"lifespan.{event}"})
        answer: Message | None
        try:
            answer = await self.answer_stream.receive()
        except anyio.EndOfStream:
            answer = None
        if answer is None:  # raised outside the except block: the app's chain stays intact
            if self.app_errors:
                raise self.app_errors[0]
            raise LifespanFailed(f"the app returned without answering lifespan.{event}")
        if answer.get("type") == f"lifespan.{event}.failed":
            raise LifespanFailed(answer.get("message", ""))


async def run_lifespan(app: ASGIApp, *, state: dict[str, Any] | None = None) -> LifespanSession:
    """Start *app* up and shut it down again; return what it sent."""
    async with lifespan(app, state=state) as session:
        pass
    return session
