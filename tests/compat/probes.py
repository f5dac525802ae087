"""What an 8.5 application observes of spakky-outbox, printed as JSON.

Runs as a script under any interpreter that has a spakky-outbox installed (the
published 8.5.0 in a venv of its own, or this workspace), so it imports only
``spakky`` and the standard library. Each probe does what application code
written for 8.5 does (subclass the outbox error, read the settings, publish an
event that cannot be serialised) and reports what it saw.

    python tests/compat/probes.py        # prints {probe name: observation}
"""

import asyncio
import json
import os
import pickle
import sys
from collections.abc import Callable
from typing import Any

from spakky.core.common.mutability import immutable
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus, OutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import AbstractSpakkyOutboxError
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.tracing.propagator import ITracePropagator

type Observation = dict[str, Any]

PROBES: dict[str, Callable[[], Observation]] = {}


def probe(function: Callable[[], Observation]) -> Callable[[], Observation]:
    """Register a probe under its function name."""
    PROBES[function.__name__] = function
    return function


def outcome(build: Callable[[], BaseException]) -> Observation:
    """Build an exception the way an app does; report its args, str and repr, or the failure."""
    try:
        error = build()
    except Exception as failure:
        return {"raised": type(failure).__name__}
    return {"args": list(error.args), "str": str(error), "repr": repr(error)}


# Item 2: an application's own subclasses of the outbox error, written for 8.5.


class AppError(AbstractSpakkyOutboxError):
    """A subclass with nothing of its own."""


class AppMessageError(AbstractSpakkyOutboxError):
    """A subclass with a class ``message``, as the framework's errors have."""

    message = "Order could not be placed"


class AppInitError(AbstractSpakkyOutboxError):
    """A subclass with its own constructor."""

    def __init__(self, order_id: str, reason: str) -> None:
        super().__init__(f"order {order_id}: {reason}")
        self.order_id = order_id


@probe
def error_subclass_one_argument() -> Observation:
    """``raise AppError("detail")``."""
    return outcome(lambda: AppError("detail"))


@probe
def error_subclass_no_argument() -> Observation:
    """``raise AppError()``."""
    return outcome(lambda: AppError())


@probe
def error_subclass_two_arguments() -> Observation:
    """``raise AppError("order o-1", 409)``."""
    return outcome(lambda: AppError("order o-1", 409))


@probe
def error_subclass_with_message_and_argument() -> Observation:
    """A subclass with a class ``message``, raised with a detail."""
    return outcome(lambda: AppMessageError("detail")) | {"message": AppMessageError.message}


@probe
def error_subclass_with_message_no_argument() -> Observation:
    """A subclass with a class ``message``, raised bare."""
    return outcome(lambda: AppMessageError())


@probe
def error_subclass_own_constructor() -> Observation:
    """A subclass whose constructor formats its own text."""
    return outcome(lambda: AppInitError("o-1", "out of stock"))


@probe
def error_subclass_pickled() -> Observation:
    """An app error crossing a process boundary (multiprocessing, Celery) keeps its args."""
    return outcome(lambda: pickle.loads(pickle.dumps(AppError("order o-1", 409))))


@probe
def error_subclass_caught_as() -> Observation:
    """Which ``except`` clauses catch an app error."""
    error = AppError("detail")
    return {
        "AbstractSpakkyOutboxError": isinstance(error, AbstractSpakkyOutboxError),
        "Exception": isinstance(error, Exception),
    }


# Item 3: the settings 8.5 read from SPAKKY_OUTBOX__*.

SETTINGS: list[tuple[str, str]] = [
    ("POLLING_INTERVAL_SECONDS", "0"),
    ("POLLING_INTERVAL_SECONDS", "0.5"),
    ("POLLING_INTERVAL_SECONDS", "1e-6"),
    ("POLLING_INTERVAL_SECONDS", "-1"),
    ("POLLING_INTERVAL_SECONDS", "inf"),
    ("POLLING_INTERVAL_SECONDS", "abc"),
    ("BATCH_SIZE", "1"),
    ("BATCH_SIZE", "100000"),
    ("BATCH_SIZE", "0"),
    ("BATCH_SIZE", "-1"),
    ("BATCH_SIZE", "1.5"),
    ("MAX_RETRY_COUNT", "0"),
    ("MAX_RETRY_COUNT", "1"),
    ("MAX_RETRY_COUNT", "-1"),
    ("CLAIM_TIMEOUT_SECONDS", "0.5"),
    ("CLAIM_TIMEOUT_SECONDS", "0"),
    ("CLAIM_TIMEOUT_SECONDS", "-1"),
]
"""Values of the four 8.5 settings: meaningful ones, edge ones and nonsense."""


def read_setting(name: str, value: str) -> Observation:
    """Construct ``OutboxConfig`` with one variable set; report the value or the error's kind."""
    variable = f"SPAKKY_OUTBOX__{name}"
    os.environ[variable] = value
    try:
        config = OutboxConfig()
    except Exception as error:
        return {"ValueError": isinstance(error, ValueError)}
    finally:
        del os.environ[variable]
    return {"value": config.model_dump()[name.lower()]}


@probe
def settings_defaults() -> Observation:
    """The four 8.5 settings with nothing set."""
    dump = OutboxConfig().model_dump()
    return {
        name: dump[name]
        for name in ("polling_interval_seconds", "batch_size", "max_retry_count", "claim_timeout_seconds")
    }


@probe
def settings_values() -> Observation:
    """Each value of `SETTINGS`, read alone."""
    return {f"{name}={value}": read_setting(name, value) for name, value in SETTINGS}


# Item 4: an event that cannot be serialised, published from a use case.


class Unserialisable:
    """A value pydantic has no JSON form for."""


@immutable
class AnyFieldEvent(AbstractIntegrationEvent):
    """An event with a field typed ``object``."""

    value: object


@immutable
class BytesEvent(AbstractIntegrationEvent):
    """An event with a bytes field."""

    value: bytes


class NoTrace(ITracePropagator):
    """A propagator that adds a fixed header (no tracing plugin needed)."""

    def inject(self, carrier: dict[str, str]) -> None:
        carrier["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def extract(self, carrier: dict[str, str]) -> None:
        return None

    def fields(self) -> list[str]:
        return ["traceparent"]


class ListStorage(IOutboxStorage):
    """The 8.5 docs' storage: four methods plus ``mark_abandoned``."""

    def __init__(self) -> None:
        self.saved: list[OutboxMessage] = []

    def save(self, message: OutboxMessage) -> None:
        self.saved.append(message)

    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        return []

    def mark_published(self, message_id: Any) -> None:
        return None

    def increment_retry(self, message_id: Any) -> None:
        return None

    def mark_abandoned(self, message_id: Any) -> None:
        return None


class AsyncListStorage(IAsyncOutboxStorage):
    """The async twin of `ListStorage`."""

    def __init__(self) -> None:
        self.saved: list[OutboxMessage] = []

    async def save(self, message: OutboxMessage) -> None:
        self.saved.append(message)

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        return []

    async def mark_published(self, message_id: Any) -> None:
        return None

    async def increment_retry(self, message_id: Any) -> None:
        return None

    async def mark_abandoned(self, message_id: Any) -> None:
        return None


UNSERIALISABLE: dict[str, Callable[[], AbstractIntegrationEvent]] = {
    "object field": lambda: AnyFieldEvent(value=Unserialisable()),
    "invalid utf-8 bytes": lambda: BytesEvent(value=b"\xff"),
}


def caught(error: BaseException | None, saved: int) -> Observation:
    """What an ``except ValueError`` around ``publish()`` sees."""
    if error is None:
        return {"raised": None, "saved": saved}
    return {"ValueError": isinstance(error, ValueError), "saved": saved}


@probe
def unserialisable_event_sync() -> Observation:
    """``OutboxEventBus.send`` of each unserialisable event."""
    seen: Observation = {}
    for case, event in UNSERIALISABLE.items():
        storage = ListStorage()
        error: BaseException | None = None
        try:
            OutboxEventBus(storage, NoTrace()).send(event())
        except Exception as failure:
            error = failure
        seen[case] = caught(error, len(storage.saved))
    return seen


@probe
def unserialisable_event_async() -> Observation:
    """``AsyncOutboxEventBus.send`` of each unserialisable event."""
    seen: Observation = {}
    for case, event in UNSERIALISABLE.items():
        storage = AsyncListStorage()
        error: BaseException | None = None
        try:
            asyncio.run(AsyncOutboxEventBus(storage, NoTrace()).send(event()))
        except Exception as failure:
            error = failure
        seen[case] = caught(error, len(storage.saved))
    return seen


@probe
def stored_headers() -> Observation:
    """Headers of a stored message when the propagator adds a plain bearer Authorization."""

    class LeakyPropagator(NoTrace):
        def inject(self, carrier: dict[str, str]) -> None:
            super().inject(carrier)
            carrier["Authorization"] = "Bearer app-token"

    storage = ListStorage()
    OutboxEventBus(storage, LeakyPropagator()).send(BytesEvent(value=b"ok"))
    return {"headers": sorted(storage.saved[0].headers)}


def main() -> None:
    """Print every probe's observation (or the names given as arguments)."""
    names = sys.argv[1:] or list(PROBES)
    for name in [n for n in os.environ if n.startswith("SPAKKY_")]:
        del os.environ[name]
    print(json.dumps({name: run(PROBES[name]) for name in names}))


def run(function: Callable[[], Observation]) -> Observation:
    """One probe's observation; a probe that fails reports how, and the others still run."""
    try:
        return function()
    except Exception as failure:
        return {"probe failed": f"{type(failure).__name__}: {failure}"}


if __name__ == "__main__":
    main()
