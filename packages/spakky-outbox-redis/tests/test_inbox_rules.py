"""The inbox conformance rules on the Redis inbox: async and sync flavours, one server and a cluster."""

from collections.abc import AsyncIterator
from typing import cast

import pytest
from spakky.outbox.testing.inbox_conformance import *  # noqa: F403

from .conftest import dropped_after, outbox_on
from .inbox_harness import RedisInboxHarness


@pytest.fixture(params=["single-async", "single-sync", "cluster-async", "cluster-sync"])
async def inbox_harness(request: pytest.FixtureRequest) -> AsyncIterator[RedisInboxHarness]:
    """A fresh inbox under a private prefix; afterwards no connection may stay checked out (a WATCH leak)."""
    topology, flavour = cast(str, request.param).split("-")
    async with dropped_after(outbox_on(request, topology)) as outbox:
        yield RedisInboxHarness(outbox, flavour)
        leaked = outbox.connections.in_use_connections()
    assert leaked == 0, f"{leaked} Redis connection(s) left checked out"
