"""The inbox conformance rules on the Redis inbox: async and sync flavours, one server and a cluster."""

from collections.abc import AsyncIterator
from typing import cast

import pytest
from spakky.outbox.testing.inbox_conformance import *  # noqa: F403

from .conftest import drop_outbox, make_outbox
from .inbox_harness import RedisInboxHarness, cluster_outbox


@pytest.fixture(params=["single-async", "single-sync", "cluster-async", "cluster-sync"])
async def inbox_harness(request: pytest.FixtureRequest) -> AsyncIterator[RedisInboxHarness]:
    """A fresh inbox under a private prefix; afterwards no connection may stay checked out (a WATCH leak)."""
    topology, flavour = cast(str, request.param).split("-")
    if topology == "cluster":
        outbox = cluster_outbox(cast(str, request.getfixturevalue("redis_cluster_url")))
    else:
        outbox = make_outbox(cast(str, request.getfixturevalue("redis_url")))
    try:
        yield RedisInboxHarness(outbox, flavour)
        leaked = outbox.connections.in_use_connections()
    finally:
        await drop_outbox(outbox)
    assert leaked == 0, f"{leaked} Redis connection(s) left checked out"
