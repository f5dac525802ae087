"""The Redis inbox in a real Spakky application: load_plugins, ``@Idempotent`` handlers, raw keys."""

from collections.abc import Iterator
from typing import override

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.testing.inbox_app import (
    InboxApplicationRules,
    InboxView,
    started_inbox_app,
)
from spakky.plugins.outbox_redis.codec import RedisKeys
from spakky.plugins.outbox_redis.inbox import (
    AsyncRedisInboxStorage,
    RedisInboxStorage,
)
from spakky.plugins.outbox_redis.inbox_base import InboxKeys

from .app.business import RedisBusiness
from .test_application import PLUGINS, _Target, redis_env  # noqa: F401 - the fixture


@pytest.fixture
def app(redis_env: _Target) -> Iterator[SpakkyApplication]:  # noqa: F811 - the fixture
    """The consumer service on Redis (one server or a cluster), started (no relay)."""
    with started_inbox_app(PLUGINS, RedisBusiness) as started:
        yield started


class _RedisInboxView(InboxView):
    """Reads the inbox records and bookings as raw keys."""

    def __init__(self, target: _Target) -> None:
        self._target = target

    @override
    def records(self) -> list[tuple[str, str, bool]]:
        start = InboxKeys(self._target.prefix).records
        client = self._target.client()
        try:
            found: list[tuple[str, str, bool]] = []
            for key in client.scan_iter(match=f"{start}*"):
                value = client.get(key)
                consumer, message_id = InboxKeys.split(key.decode()[len(start) :])
                found.append((consumer, message_id, value is not None and b" " in value))
            return sorted(found)
        finally:
            client.close()

    @override
    def bookings(self, order_id: str, *, sync: bool = False) -> list[int]:
        name = f"{'sync-' if sync else ''}bookings:{order_id}"
        client = self._target.client()
        try:
            return [int(run) for run in client.lrange(RedisKeys(self._target.prefix).business(name), 0, -1)]
        finally:
            client.close()


@pytest.fixture
def inbox_view(redis_env: _Target) -> InboxView:  # noqa: F811 - the fixture
    """The raw keys under the test's prefix."""
    return _RedisInboxView(redis_env)


class TestRedisInboxApplication(InboxApplicationRules):
    """The inbox application rules on Redis, one server and a cluster."""

    inbox_types = (AsyncRedisInboxStorage, RedisInboxStorage)
