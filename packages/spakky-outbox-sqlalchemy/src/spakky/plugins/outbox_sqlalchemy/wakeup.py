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
from typing import Any, override

from spakky.outbox.backend.wakeup import (
    Backoff,
    ListenerTask,
    ListenerThread,
    WakeUpHub,
)
from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session

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


async def open_own_connection(engine: AsyncEngine) -> tuple[AsyncConnection, Any]:
    """A connection of ``engine``'s own, taken out of its pool for good, and its driver.

    Opened by the application's engine, so everything it connects with holds here
    too (``connect_args`` such as a TLS context or ``server_settings``, a
    ``creator``, ``do_connect`` and ``connect`` hooks); detached, it never returns
    to the pool (closing it closes it) and never counts against the pool's size.
    psycopg connections are put in autocommit, as asyncpg's always are.
    """
    connection = await engine.connect()
    try:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # read first: a detached one names none
        await connection.run_sync(lambda sync: sync.detach())
        if not type(driver).__module__.startswith("asyncpg"):
            await driver.set_autocommit(True)
    except BaseException:
        with contextlib.suppress(Exception):
            await connection.invalidate()
        raise
    return connection, driver


def open_own_sync_connection(engine: Engine) -> tuple[Connection, Any]:
    """Synchronous `open_own_connection` (psycopg 3)."""
    connection = engine.connect()
    try:
        driver: Any = connection.connection.driver_connection  # read first: a detached one names none
        connection.detach()
        driver.autocommit = True
    except BaseException:
        with contextlib.suppress(Exception):
            connection.invalidate()
        raise
    return connection, driver


class _OwedNotify:
    """The NOTIFY a storage owes after commits, and its one sender (one per storage).

    A commit owes a NOTIFY; the first commit while no sender runs starts one,
    later ones only leave the debt in place. The sender waits for the throttle
    window, takes the debt and sends, and goes on while commits owe more: one
    send at a time, on one kept connection, however many commits arrive at once.
    """

    def __init__(self, channel: str, interval: float) -> None:
        self.channel = channel
        self.interval = interval
        self._lock = threading.Lock()
        self._owed = False
        self._sending = False
        self._closing = False

    def _owe(self) -> bool:
        """Owe a NOTIFY; True when the caller must start the sender (none runs)."""
        with self._lock:
            self._owed = True
            if self._sending:
                return False
            self._sending = True
            return True

    def _take_sender(self) -> bool:
        """Become the sender of a debt nobody sends (closing); False when none is owed."""
        with self._lock:
            if self._sending or not self._owed:
                return False
            self._sending = True
            return True

    def _still_owed(self) -> bool:
        """Whether the sender goes on; when nothing is owed it ends, under the lock."""
        with self._lock:
            if not self._owed:
                self._sending = False
            return self._owed

    def _stop_sending(self) -> None:
        """The sender ended early (its loop closed); the debt stays for the next one."""
        with self._lock:
            self._sending = False

    def _delay(self) -> float:
        """Seconds until the debt may be sent (none once closing)."""
        if self._closing:
            return 0.0
        return notify_throttle.remaining(self.channel, self.interval)

    def _take(self) -> None:
        """Take the debt, recorded as a NOTIFY sent now."""
        with self._lock:
            self._owed = False
        notify_throttle.record(self.channel)


class AsyncDeferredNotify(_OwedNotify):
    """Sends the NOTIFYs saves owe from the event loop, one at a time, throttled.

    Saves whose NOTIFY the throttle holds back still have to wake relays in
    other processes: one NOTIFY is owed, sent at the end of the window on the
    storage's kept connection, so several such commits cost one.
    """

    def __init__(self, engine: AsyncEngine, channel: str, interval: float) -> None:
        super().__init__(channel, interval)
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None
        self._loop: AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None

    def committed(self, loop: AbstractEventLoop) -> None:
        """After a commit: owe a NOTIFY, starting the sender on ``loop`` if none runs."""
        if self._owe():
            try:
                loop.call_soon_threadsafe(self._start)
            except RuntimeError:  # the loop closed meanwhile
                self._stop_sending()

    def _start(self) -> None:
        self._hurry = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._hurry))

    async def _run(self, hurry: asyncio.Event) -> None:
        try:
            while self._still_owed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hurry.wait(), self._delay())
                self._take()
                await self._send()
        except BaseException:  # cancelled with its loop: the next commit sends
            self._stop_sending()
            raise
        finally:
            if self._closing:
                await self._drop()

    async def _send(self) -> None:
        for attempt in range(_NOTIFY_ATTEMPTS):
            try:
                driver = await self._kept()
                await driver.execute(notify_statement(self.channel))
                return
            except Exception:  # a wake-up is a hint: relays keep polling
                await self._drop()
                if attempt == _NOTIFY_ATTEMPTS - 1:
                    logger.warning("Outbox NOTIFY could not be sent", exc_info=True)

    async def _kept(self) -> Any:
        """The driver connection NOTIFYs go through, opened on first use and kept.

        Sending on the driver (asyncpg or psycopg) itself, in autocommit, costs
        one round trip and little CPU: with NOTIFYs every few milliseconds under
        load, SQLAlchemy's execution path per NOTIFY was a cost every writer paid.
        Only the sender uses it, so it is never opened twice or used by two sends.
        """
        loop = asyncio.get_running_loop()
        if self._connection is not None and self._loop is not loop:
            self._leave_behind()
        if self._connection is None:
            self._connection, self._driver = await open_own_connection(self._engine)
            self._loop = loop
        return self._driver

    def _leave_behind(self) -> None:
        """Close a connection another loop opened, on that loop (it belongs there)."""
        connection, loop = self._connection, self._loop
        self._connection = self._driver = self._loop = None
        if connection is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(connection.close(), loop)

    async def _drop(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()

    async def close(self) -> None:
        """Send an owed NOTIFY now and close the connection."""
        self._closing = True
        task, hurry = self._task, self._hurry
        if task is not None and hurry is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                hurry.set()
                await asyncio.gather(task, return_exceptions=True)
            else:
                task.get_loop().call_soon_threadsafe(hurry.set)
        if self._take_sender():
            await self._run(asyncio.Event())
        if self._loop is asyncio.get_running_loop():
            await self._drop()
        else:
            self._leave_behind()


class DeferredNotifyThread(_OwedNotify):
    """Synchronous `AsyncDeferredNotify`: a sender thread sends the owed NOTIFYs."""

    def __init__(self, engine: Engine, channel: str, interval: float) -> None:
        super().__init__(channel, interval)
        self._engine = engine
        self._connection: Connection | None = None
        self._driver: Any = None
        self._connection_lock = threading.Lock()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """After a commit: owe a NOTIFY, starting the sender thread if none runs."""
        if self._owe():
            thread = threading.Thread(
                target=self._run, name=f"outbox-notify-{self.channel}", daemon=True
            )
            self._thread = thread
            thread.start()

    def _run(self) -> None:
        while self._still_owed():
            self._hurry.wait(self._delay())
            self._take()
            self._send()
        if self._closing:
            self._drop()

    def _send(self) -> None:
        with self._connection_lock:
            for attempt in range(_NOTIFY_ATTEMPTS):
                try:
                    self._kept().execute(notify_statement(self.channel))
                    return
                except Exception:  # a wake-up is a hint: relays keep polling
                    self._drop_locked()
                    if attempt == _NOTIFY_ATTEMPTS - 1:
                        logger.warning("Outbox NOTIFY could not be sent", exc_info=True)

    def _kept(self) -> Any:
        """The psycopg connection NOTIFYs go through (autocommit), opened on first use and kept."""
        if self._connection is None:
            self._connection, self._driver = open_own_sync_connection(self._engine)
        return self._driver

    def _drop(self) -> None:
        with self._connection_lock:
            self._drop_locked()

    def _drop_locked(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()

    def close(self) -> None:
        """Send an owed NOTIFY now and close the connection."""
        self._closing = True
        self._hurry.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        if self._take_sender():
            self._run()
        self._drop()


def notify_channel(table_name: str) -> str:
    """PostgreSQL channel on which saves into ``table_name`` are announced."""
    return f"spakky_outbox_{table_name}"[:63]


class PgNotificationListener(ListenerTask):
    """Keeps one dedicated LISTEN connection open and signals the hub on NOTIFY.

    Works with asyncpg (``add_listener``) and psycopg 3 (``notifies()``);
    reconnects with backoff after a dropped connection.
    """

    KEEPALIVE_SECONDS = 30.0

    def __init__(self, engine: AsyncEngine, channel: str, hub: WakeUpHub) -> None:
        super().__init__(hub)
        self._engine = engine
        self._channel = channel
        self._reconnecting = False

    @override
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
        connection, driver = await self._open()
        try:
            if type(driver).__module__.startswith("asyncpg"):
                await self._listen_asyncpg(driver)
            else:
                await self._listen_psycopg(driver)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())

    async def _open(self) -> tuple[AsyncConnection, Any]:
        """Open the LISTEN connection; stopped meanwhile, close it rather than drop it."""
        opening = asyncio.ensure_future(open_own_connection(self._engine))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                connection, _ = await opening
                await connection.close()
            raise

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
        await driver.execute(f'LISTEN "{self._channel}"')
        self._listening()
        while True:
            async for _ in driver.notifies(timeout=self.KEEPALIVE_SECONDS):
                self._hub.signal()
            await driver.execute("SELECT 1")


class PgNotificationThread(ListenerThread):
    """Synchronous counterpart of `PgNotificationListener`, for psycopg 3 engines.

    A daemon thread holds one dedicated LISTEN connection, reconnecting with
    backoff after errors. Other sync drivers get in-process wake-ups only.
    """

    POLL_SECONDS = 0.5

    def __init__(self, engine: Engine, channel: str, hub: WakeUpHub) -> None:
        super().__init__(hub, f"outbox-listen-{channel}")
        self._engine = engine
        self._channel = channel

    @staticmethod
    def supported(engine: Engine) -> bool:
        """Whether the engine's driver is psycopg 3."""
        return (
            engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        )

    @override
    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                connection, driver = open_own_sync_connection(self._engine)
                with connection:
                    driver.execute(f'LISTEN "{self._channel}"')
                    backoff.connected(self.ready, self._hub)
                    while not self._stop.is_set():
                        for _ in driver.notifies(timeout=self.POLL_SECONDS):
                            self._hub.signal()
                    return
            except Exception:  # reconnect after any driver or network error
                logger.warning(
                    "Outbox LISTEN connection lost; reconnecting", exc_info=True
                )
            self._stop.wait(backoff.lost(self.ready))
