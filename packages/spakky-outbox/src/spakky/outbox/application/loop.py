"""The started application's event loop, for running async use cases and storage calls from plain code.

Spakky runs async Pods on an event loop of its own, in a thread it starts with
the application. A coroutine of those Pods (an ``async`` use case) must run
there: ``asyncio.run(use_case.execute(...))`` runs it on a new loop, where the
connections and futures the Pods made belong to another loop and fail. This
Pod hands the coroutine to the application's loop and waits for its result.
"""

import asyncio
import threading
from asyncio import locks
from collections.abc import Coroutine
from typing import Any, override

from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.interfaces.application_context import IApplicationContext
from spakky.core.pod.interfaces.aware.application_context_aware import (
    IApplicationContextAware,
)
from spakky.core.service.interfaces.service import IAsyncService
from spakky.outbox.error import ApplicationLoopReentryError, ApplicationNotStartedError
from spakky.tracing.context import TraceContext


@Pod()
class ApplicationEventLoop(IAsyncService, IApplicationContextAware):
    """Runs coroutines on the started application's event loop, from any other thread.

    Example:
        >>> app = SpakkyApplication(ApplicationContext()).load_plugins().scan(shop).start()
        >>> loop = app.application_context.get(ApplicationEventLoop)
        >>> loop.run(app.application_context.get(PlaceOrder).execute("o-1"))
    """

    _loop: asyncio.AbstractEventLoop | None
    _thread: threading.Thread | None
    _context: IApplicationContext | None

    def __init__(self) -> None:
        """Start without a loop: the application is not started yet."""
        self._loop = None
        self._thread = None
        self._context = None

    @override
    def set_application_context(self, application_context: IApplicationContext) -> None:
        self._context = application_context

    @override
    def set_stop_event(self, stop_event: locks.Event) -> None:
        return None

    @override
    async def start_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.current_thread()

    @override
    async def stop_async(self) -> None:
        self._loop = None
        self._thread = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the started application runs its async Pods on; None before start and after stop."""
        return self._loop

    def run[T](self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the application's loop and return its result.

        Each call runs in a fresh Spakky context, as a request would: its own
        context-scoped Pods, database session and transaction, so calls from
        several threads never share one session. It continues the caller's
        trace (`TraceContext`) or starts one, so the events it publishes carry
        a ``traceparent`` to the broker.

        Args:
            coroutine: E.g. ``use_case.execute(command)``.
            timeout: Seconds to wait for the result (None: as long as it takes).

        Returns:
            What the coroutine returned; what it raised is raised here.

        Raises:
            ApplicationNotStartedError: The application is not started (or stopped).
            ApplicationLoopReentryError: Called from the application's loop itself.
            TimeoutError: ``timeout`` passed; the coroutine is cancelled.
        """
        loop, thread = self._loop, self._thread
        if loop is None or loop.is_closed():
            coroutine.close()
            raise ApplicationNotStartedError()
        if threading.current_thread() is thread:
            coroutine.close()
            raise ApplicationLoopReentryError()
        future = asyncio.run_coroutine_threadsafe(self._in_own_context(coroutine), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _in_own_context[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._context is not None:
            self._context.clear_context()
        if TraceContext.get() is None:
            TraceContext.set(TraceContext.new_root())
        return await coroutine


class StorageLoop:
    """Runs storage calls on the loop the storage's connections belong to.

    The storages' connection pools (SQLAlchemy, Redis, MongoDB clients) belong
    to the application's loop; code served by another loop (the command line,
    a console under uvicorn) hands every call over to it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run on ``loop``; None runs on whichever loop calls."""
        self._loop = loop

    @classmethod
    def of(cls, context: IApplicationContext) -> "StorageLoop":
        """The loop of a started application, as its `ApplicationEventLoop` saw it start."""
        return cls(context.get(ApplicationEventLoop).loop)

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
