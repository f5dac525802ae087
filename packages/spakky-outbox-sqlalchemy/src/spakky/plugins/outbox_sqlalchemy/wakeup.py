"""Wake-up signals: in-process after commit, and PostgreSQL LISTEN/NOTIFY.

Each outbox table has one process-wide `WakeUpHub` (core's). A saving session signals it
right after its commit; on PostgreSQL each such commit is also announced with a
``pg_notify``, sent after the commit on a connection of the storage's own, that a
`PgNotificationListener` in every relay process turns into a signal. Commits
within the throttle window of the last NOTIFY share one sent at the window's
end: delayed, never dropped. Signals are hints only: relays keep polling.
"""

import asyncio
import contextlib
import logging
import threading
import time
from asyncio import AbstractEventLoop
from collections.abc import Callable
from functools import cache
from typing import Any

from spakky.outbox.common.wakeup import WakeUpHub
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

_AFTER_COMMIT = "spakky_outbox_after_commit"


def _after_commit(session: Session) -> None:
    callbacks: dict[object, Callable[[], None]] = session.info.pop(_AFTER_COMMIT, {})
    for callback in callbacks.values():
        callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


@cache
def _listen_to_sessions() -> None:
    """Listen once on every Session: a per-session listener costs each transaction."""
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _after_rollback)


def run_after_commit(session: Session, key: object, callback: Callable[[], None]) -> None:
    """Run ``callback`` once ``session``'s current transaction commits (once per ``key``).

    The callback runs in the committing thread and must not raise.
    """
    _listen_to_sessions()
    pending: dict[object, Callable[[], None]] = session.info.setdefault(_AFTER_COMMIT, {})
    pending.setdefault(key, callback)


def signal_after_commit(session: Session, hub: WakeUpHub) -> None:
    """Signal ``hub`` once ``session``'s current transaction commits."""
    run_after_commit(session, hub, hub.signal)


class NotifyThrottle:
    """Allows one NOTIFY per channel per interval in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def remaining(self, channel: str, interval: float) -> float:
        """Seconds until ``channel`` may be notified again (0 when it may now)."""
        with self._lock:
            last = self._last.get(channel)
        if last is None:
            return 0.0
        return max(0.0, last + interval - time.monotonic())

    def record(self, channel: str) -> None:
        """Record a NOTIFY sent on ``channel`` now."""
        with self._lock:
            self._last[channel] = time.monotonic()


notify_throttle = NotifyThrottle()
"""The process-wide NOTIFY throttle."""

def notify_statement(channel: str) -> str:
    """The statement announcing committed saves on ``channel`` (sent after the commit).

    A literal rather than a parameter, so the driver runs it in one simple
    round trip; the channel comes from a validated table name and is quoted.
    """
    return "SELECT pg_notify('" + channel.replace("'", "''") + "', '')"


_NOTIFY_ATTEMPTS = 2
"""A kept connection a database restart closed fails once; the second attempt
opens a new one."""


class _OwedNotify:
    """A NOTIFY the throttle held back, owed at the end of its window (one per storage)."""

    def __init__(self, channel: str, interval: float) -> None:
        self.channel = channel
        self.interval = interval
        self._lock = threading.Lock()
        self._owed = False

    def _owe(self) -> float | None:
        """Owe a NOTIFY; return its delay, or None when one is already owed."""
        with self._lock:
            if self._owed:
                return None
            self._owed = True
        return notify_throttle.remaining(self.channel, self.interval)

    def _settle(self) -> bool:
        """Take the debt (recorded as a NOTIFY sent now); False when none was owed."""
        with self._lock:
            owed, self._owed = self._owed, False
        if owed:
            notify_throttle.record(self.channel)
        return owed


class AsyncDeferredNotify(_OwedNotify):
    """Sends a held-back NOTIFY from the event loop once the throttle window ends.

    A save whose NOTIFY the throttle suppressed still has to wake relays in
    other processes: after its commit one NOTIFY is owed, sent at the end of
    the window on a connection of its own, so several such commits cost one.
    """

    def __init__(self, engine: AsyncEngine, channel: str, interval: float) -> None:
        super().__init__(channel, interval)
        self._url = engine.url
        self._engine: AsyncEngine | None = None
        self._connection: AsyncConnection | None = None
        self._raw: Any = None
        self._loop: AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def committed(self, loop: AbstractEventLoop) -> None:
        """After a commit whose NOTIFY was held back: send one at the window's end."""
        delay = self._owe()
        if delay is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._schedule, loop, delay)

    def _schedule(self, loop: AbstractEventLoop, delay: float) -> None:
        self._timer = loop.call_later(delay, self._fire, loop)

    def _fire(self, loop: AbstractEventLoop) -> None:
        self._timer = None
        task = loop.create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        if not self._settle():
            return
        for attempt in range(_NOTIFY_ATTEMPTS):
            try:
                driver = await self._driver()
                await driver.execute(notify_statement(self.channel))
                return
            except Exception:  # a wake-up is a hint: relays keep polling
                await self._drop()
                if attempt == _NOTIFY_ATTEMPTS - 1:
                    logger.warning("Outbox NOTIFY could not be sent", exc_info=True)

    async def _driver(self) -> Any:
        """The driver connection NOTIFYs go through, opened on first use and kept.

        Sending on the driver (asyncpg or psycopg) itself, in autocommit, costs
        one round trip and little CPU: with NOTIFYs every few milliseconds under
        load, SQLAlchemy's execution path per NOTIFY was a cost every writer paid.
        """
        loop = asyncio.get_running_loop()
        if self._connection is not None and self._loop is not loop:
            # A connection belongs to the loop that opened it: leave it behind.
            self._connection = None
        if self._connection is None:
            if self._engine is None:
                self._engine = create_async_engine(self._url, poolclass=NullPool)
            connection = await self._engine.connect()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            if not type(driver).__module__.startswith("asyncpg"):
                await driver.set_autocommit(True)
            self._connection, self._raw, self._loop = connection, driver, loop
        return self._raw

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()

    async def close(self) -> None:
        """Send an owed NOTIFY now and close the connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._send()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._drop()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


class DeferredNotifyThread(_OwedNotify):
    """Synchronous `AsyncDeferredNotify`: a timer thread sends the held-back NOTIFY."""

    def __init__(self, engine: Engine, channel: str, interval: float) -> None:
        super().__init__(channel, interval)
        self._url = engine.url
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._raw: Any = None
        self._engine_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def committed(self) -> None:
        """After a commit whose NOTIFY was held back: send one at the window's end."""
        delay = self._owe()
        if delay is not None:
            timer = threading.Timer(delay, self._send)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _send(self) -> None:
        if not self._settle():
            return
        with self._engine_lock:
            for attempt in range(_NOTIFY_ATTEMPTS):
                try:
                    self._driver().execute(notify_statement(self.channel))
                    return
                except Exception:  # a wake-up is a hint: relays keep polling
                    self._drop()
                    if attempt == _NOTIFY_ATTEMPTS - 1:
                        logger.warning("Outbox NOTIFY could not be sent", exc_info=True)

    def _driver(self) -> Any:
        """The psycopg connection NOTIFYs go through (autocommit), opened on first use and kept."""
        if self._connection is None:
            if self._engine is None:
                self._engine = create_engine(self._url, poolclass=NullPool)
            connection = self._engine.connect()
            driver: Any = connection.connection.driver_connection
            driver.autocommit = True
            self._connection, self._raw = connection, driver
        return self._raw

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()

    def close(self) -> None:
        """Send an owed NOTIFY now and close the connection."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._send()
        if timer is not None:
            timer.join()
        with self._engine_lock:
            self._drop()
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()


def notify_channel(table_name: str) -> str:
    """PostgreSQL channel on which saves into ``table_name`` are announced."""
    return f"spakky_outbox_{table_name}"[:63]


class PgNotificationListener:
    """Keeps one dedicated LISTEN connection open and signals the hub on NOTIFY.

    Works with asyncpg (``add_listener``) and psycopg 3 (``notifies()``);
    reconnects with backoff after a dropped connection.
    """

    KEEPALIVE_SECONDS = 30.0

    def __init__(self, engine: AsyncEngine, channel: str, hub: WakeUpHub) -> None:
        self._engine = create_async_engine(engine.url, poolclass=NullPool)
        self._channel = channel
        self._hub = hub
        self._task: asyncio.Task[None] | None = None
        self._reconnecting = False
        self.ready = asyncio.Event()
        """Set while a LISTEN is in place (used by tests)."""

    def start(self) -> None:
        """Start listening in a background task (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._engine.dispose()

    async def _run(self) -> None:
        backoff = 0.5
        self._reconnecting = False
        while True:
            try:
                await self._listen_once()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect after any driver or network error
                logger.warning(
                    "Outbox LISTEN connection lost; reconnecting", exc_info=True
                )
            self.ready.clear()
            self._reconnecting = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _listen_once(self) -> None:
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            module = type(driver).__module__
            if module.startswith("asyncpg"):
                await self._listen_asyncpg(driver)
            else:
                await self._listen_psycopg(driver)

    def _listening(self) -> None:
        self.ready.set()
        if self._reconnecting:
            self._hub.signal()  # saves may have been committed while disconnected

    def _on_notification(self, *_: object) -> None:
        self._hub.signal()

    async def _listen_asyncpg(self, driver: Any) -> None:
        closed = asyncio.Event()
        driver.add_termination_listener(lambda *_: closed.set())  # pyright: ignore[reportUnknownLambdaType]
        await driver.add_listener(self._channel, self._on_notification)
        self._listening()
        try:
            while not closed.is_set():
                try:
                    await asyncio.wait_for(closed.wait(), self.KEEPALIVE_SECONDS)
                except TimeoutError:
                    await driver.execute("SELECT 1")
        finally:
            if not driver.is_closed():
                await driver.remove_listener(self._channel, self._on_notification)

    async def _listen_psycopg(self, driver: Any) -> None:
        await driver.set_autocommit(True)
        await driver.execute(f'LISTEN "{self._channel}"')
        self._listening()
        while True:
            async for _ in driver.notifies(timeout=self.KEEPALIVE_SECONDS):
                self._hub.signal()
            await driver.execute("SELECT 1")


class PgNotificationThread:
    """Synchronous counterpart of `PgNotificationListener`, for psycopg 3 engines.

    A daemon thread holds one dedicated LISTEN connection, reconnecting with
    backoff after errors. Other sync drivers get in-process wake-ups only.
    """

    POLL_SECONDS = 0.5

    def __init__(self, engine: Engine, channel: str, hub: WakeUpHub) -> None:
        self._engine = create_engine(engine.url, poolclass=NullPool)
        self._channel = channel
        self._hub = hub
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        """Set while a LISTEN is in place (used by tests)."""

    @staticmethod
    def supported(engine: Engine) -> bool:
        """Whether the engine's driver is psycopg 3."""
        return (
            engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        )

    def start(self) -> None:
        """Start the listening thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"outbox-listen-{self._channel}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._engine.dispose()

    def _run(self) -> None:
        backoff = 0.5
        reconnecting = False
        while not self._stop.is_set():
            try:
                with self._engine.connect() as connection:
                    driver: Any = connection.connection.driver_connection
                    driver.autocommit = True
                    driver.execute(f'LISTEN "{self._channel}"')
                    self.ready.set()
                    if reconnecting:
                        self._hub.signal()
                    backoff = 0.5
                    while not self._stop.is_set():
                        for _ in driver.notifies(timeout=self.POLL_SECONDS):
                            self._hub.signal()
                    return
            except Exception:  # reconnect after any driver or network error
                logger.warning(
                    "Outbox LISTEN connection lost; reconnecting", exc_info=True
                )
            self.ready.clear()
            reconnecting = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
