"""`ApplicationEventLoop`: async use cases called from the application's own code after ``start()``."""

import asyncio
import threading
from collections.abc import Iterator

import pytest
from memory_app import build_app, running
from outbox_testapp.service import PlaceOrderUseCase
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.error import ApplicationLoopReentryError, ApplicationNotStartedError
from spakky.outbox.testing.memory import InMemoryOutboxState
from spakky.tracing.context import TraceContext


@pytest.fixture
def app() -> Iterator[SpakkyApplication]:
    """The in-memory application, started for the test."""
    with running(build_app()) as started:
        yield started


@pytest.fixture
def loop(app: SpakkyApplication) -> ApplicationEventLoop:
    """The started application's event loop."""
    return app.application_context.get(ApplicationEventLoop)


@pytest.fixture
def use_case(app: SpakkyApplication) -> PlaceOrderUseCase:
    """The test service's use case that stores an order and publishes ``OrderPlaced``."""
    return app.application_context.get(PlaceOrderUseCase)


def test_application_event_loop_use_case_expect_committed_on_application_loop(
    app: SpakkyApplication, loop: ApplicationEventLoop, use_case: PlaceOrderUseCase
) -> None:
    """A use case run from the main thread commits its order, where asyncio.run would fail on another loop."""
    loop.run(use_case.execute("o-1", "alice"), timeout=10)
    state = app.application_context.get(InMemoryOutboxState)
    assert state.business == {"order:o-1": "alice"}
    assert [r.message.event_name for r in state.records.values()] == ["OrderPlaced"]
    with pytest.raises(RuntimeError, match="business rule failed"):
        loop.run(use_case.execute("o-2", "bob", fail=True), timeout=10)
    assert "order:o-2" not in state.business


def test_application_event_loop_calls_expect_fresh_context_each(
    app: SpakkyApplication, loop: ApplicationEventLoop
) -> None:
    """Each call runs in its own Spakky context (own session scope), also from several threads."""
    context = app.application_context

    async def context_id() -> object:
        return context.get_context_id()

    context.get_context_id()  # the caller's own context must not leak into the calls
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(loop.run(context_id(), timeout=10))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen.append(loop.run(context_id(), timeout=10))
    assert len(set(seen)) == 5 and context.get_context_id() not in seen


def test_application_event_loop_before_start_and_after_stop_expect_not_started_error() -> None:
    """Before start and after stop the call fails with our error, and the coroutine is closed, not leaked."""
    app = build_app()

    async def work() -> None:
        raise AssertionError("must not run")

    coroutine = work()
    with pytest.raises(ApplicationNotStartedError, match=r"call SpakkyApplication.start\(\)"):
        app.application_context.get(ApplicationEventLoop).run(coroutine)
    assert coroutine.cr_frame is None
    app.start()
    loop = app.application_context.get(ApplicationEventLoop)
    app.stop()
    with pytest.raises(ApplicationNotStartedError):
        loop.run(work())


def test_application_event_loop_from_its_own_loop_expect_reentry_error(loop: ApplicationEventLoop) -> None:
    """Called from a coroutine already on the application's loop, it refuses instead of deadlocking."""

    async def nested() -> str:
        async def inner() -> str:
            return "inner"

        try:
            return loop.run(inner())
        except ApplicationLoopReentryError as error:
            return str(error)

    assert "await the coroutine instead" in loop.run(nested(), timeout=10)


def test_application_event_loop_timeout_expect_timeout_error_and_coroutine_cancelled(
    loop: ApplicationEventLoop,
) -> None:
    """A call that outlives its timeout raises TimeoutError and the coroutine is cancelled on the loop."""
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        loop.run(slow(), timeout=0.2)
    assert cancelled.wait(10)


def test_application_event_loop_trace_expect_caller_trace_continued_or_one_started(
    app: SpakkyApplication, loop: ApplicationEventLoop, use_case: PlaceOrderUseCase
) -> None:
    """A call continues the caller's trace, or starts one, so stored events carry a traceparent."""
    loop.run(use_case.execute("o-1", "alice"), timeout=10)
    caller = TraceContext.new_root()
    TraceContext.set(caller)
    try:
        loop.run(use_case.execute("o-2", "alice"), timeout=10)
    finally:
        TraceContext.clear()
    started, continued = [
        TraceContext.from_traceparent(r.message.headers["traceparent"])
        for r in app.application_context.get(InMemoryOutboxState).records.values()
    ]
    assert continued.trace_id == caller.trace_id
    assert started.trace_id != caller.trace_id
