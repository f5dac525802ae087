"""Running storage calls on the event loop of the application that owns the storage.

A started Spakky application runs its own event loop in a thread, and the
storages' connection pools (SQLAlchemy, Redis, MongoDB clients) belong to it;
code served by another loop (the command line, a console under uvicorn) hands
every call over to that loop.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

from spakky.core.pod.interfaces.application_context import IApplicationContext


def application_loop(context: IApplicationContext) -> asyncio.AbstractEventLoop | None:
    """The event loop a started application runs its async services on; None before it started."""
    # Spakky keeps it private; nothing else says which loop the pools belong to.
    return cast(
        asyncio.AbstractEventLoop | None,
        context._ApplicationContext__event_loop,  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]
    )


class StorageLoop:
    """Runs storage calls on the loop the storage's connections belong to."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run on ``loop``; None runs on whichever loop calls."""
        self._loop = loop

    @classmethod
    def of(cls, context: IApplicationContext) -> "StorageLoop":
        """The loop of a started application."""
        return cls(application_loop(context))

    async def run[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the storage's loop."""
        if self._loop is None or self._loop is asyncio.get_running_loop():
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def run_blocking[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the storage's loop from a thread that runs no loop; wait for it."""
        if self._loop is None:
            return asyncio.run(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
