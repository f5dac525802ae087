"""`ApplicationEventLoop`: async use cases called from the application's own code after ``start()``."""

import asyncio
import threading

import pytest
from memory_app import build_app
from outbox_testapp.service import PlaceOrderUseCase
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.error import ApplicationLoopReentryError, ApplicationNotStartedError
from spakky.outbox.testing.memory import InMemoryOutboxState
from spakky.tracing.context import TraceContext


def test_application_event_loop_use_case_expect_committed_on_application_loop() -> None:
    """A use case run from the main thread commits its order, where asyncio.run would fail on another loop."""
    app = build_app().start()
    try:
        context = app.application_context
        loop = context.get(ApplicationEventLoop)
        use_case = context.get(PlaceOrderUseCase)
        loop.run(use_case.execute("o-1", "alice"), timeout=10)
        state = context.get(InMemoryOutboxState)
        assert state.business == {"order:o-1": "alice"}
        assert [r.message.event_name for r in state.records.values()] == ["OrderPlaced"]
        with pytest.raises(RuntimeError, match="business rule failed"):
            loop.run(use_case.execute("o-2", "bob", fail=True), timeout=10)
        assert "order:o-2" not in state.business
    finally:
        app.stop()


def test_application_event_loop_calls_expect_fresh_context_each() -> None:
    """Each call runs in its own Spakky context (own session scope), also from several threads."""
    app = build_app().start()
    try:
        context = app.application_context
        loop = context.get(ApplicationEventLoop)

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
    finally:
        app.stop()


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


def test_application_event_loop_from_its_own_loop_expect_reentry_error() -> None:
    """Called from a coroutine already on the application's loop, it refuses instead of deadlocking."""
    app = build_app().start()
    try:
        loop = app.application_context.get(ApplicationEventLoop)

        async def nested() -> str:
            async def inner() -> str:
                return "inner"

            try:
                return loop.run(inner())
            except ApplicationLoopReentryError as error:
                return str(error)

        assert "await the coroutine instead" in loop.run(nested(), timeout=10)
    finally:
        app.stop()


def test_application_event_loop_timeout_expect_timeout_error_and_coroutine_cancelled() -> None:
    """A call that outlives its timeout raises TimeoutError and the coroutine is cancelled on the loop."""
    app = build_app().start()
    try:
        loop = app.application_context.get(ApplicationEventLoop)
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
    finally:
        app.stop()


def test_application_event_loop_trace_expect_caller_trace_continued_or_one_started() -> None:
    """A call continues the caller's trace, or starts one, so stored events carry a traceparent."""
    app = build_app().start()
    try:
        context = app.application_context
        loop = context.get(ApplicationEventLoop)
        use_case = context.get(PlaceOrderUseCase)
        state = context.get(InMemoryOutboxState)
        loop.run(use_case.execute("o-1", "alice"), timeout=10)
        caller = TraceContext.new_root()
        TraceContext.set(caller)
        try:
            loop.run(use_case.execute("o-2", "alice"), timeout=10)
        finally:
            TraceContext.clear()
        started, continued = [
            TraceContext.from_traceparent(r.message.headers["traceparent"]) for r in state.records.values()
        ]
        assert continued.trace_id == caller.trace_id
        assert started.trace_id != caller.trace_id
    finally:
        app.stop()
