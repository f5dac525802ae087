"""Transactions: the session is bound to the context, commits or aborts, and always ends."""

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoDriver
from spakky.plugins.outbox_mongodb.error import (
    MongoReplicaSetRequiredError,
    MongoTransactionNotActiveError,
    MongoTransactionRetryableError,
)
from spakky.plugins.outbox_mongodb.transaction import (
    AsyncMongoTransaction,
    MongoTransaction,
    current_async_session,
    current_session,
    translate_error,
)

from .conftest import DATABASE, MongoOutbox, outbox_settings, refuse_commit


class _RollbackError(Exception):
    """Raised inside a transaction to roll it back."""


def _message(key: str | None = None) -> OutboxMessage:
    return OutboxMessage(uuid4(), "OrderPlaced", b"{}", {}, datetime.now(UTC), partition_key=key)


def _business(outbox: MongoOutbox) -> str:
    return f"business_{outbox.config.collection}"


async def test_async_transaction_bound_session_expect_implicit_calls_join(outbox: MongoOutbox) -> None:
    """With ClientSession.bind(), a call on the session's client without session= joins the transaction."""
    try:
        async with AsyncMongoTransaction(outbox.config, outbox.connections):
            session = current_async_session()
            assert session.in_transaction
            if not hasattr(session, "bind"):
                pytest.skip("installed PyMongo has no ClientSession.bind() (4.17+)")
            await session.client[DATABASE][_business(outbox)].insert_one({"_id": "implicit"})
            await outbox.storage().save(_message())
            raise _RollbackError
    except _RollbackError:
        pass
    assert await outbox.raw.database[_business(outbox)].count_documents({}) == 0
    assert await outbox.raw.count_documents({}) == 0
    assert outbox.connections.open_sessions == 0


async def test_async_transaction_commit_expect_business_and_message_stored(outbox: MongoOutbox) -> None:
    """Commit stores what the repository wrote with the session and the saved message."""
    sent = _message("c-1")
    async with AsyncMongoTransaction(outbox.config, outbox.connections):
        session = current_async_session()
        await session.client[DATABASE][_business(outbox)].insert_one({"_id": "o-1"}, session=session)
        await outbox.storage().save(sent)
    assert await outbox.raw.database[_business(outbox)].find_one({"_id": "o-1"}) is not None
    assert (await outbox.raw.find_one({"_id": sent.id}))["state"] == "pending"
    assert outbox.connections.open_sessions == 0


async def test_async_transaction_nested_expect_outer_decides(outbox: MongoOutbox) -> None:
    """A nested transaction joins the outer one; its rollback dooms the outer commit."""
    outer = AsyncMongoTransaction(outbox.config, outbox.connections)
    inner = AsyncMongoTransaction(outbox.config, outbox.connections)
    async with outer:
        session = current_async_session()
        try:
            async with inner:
                assert current_async_session() is session
                await outbox.storage().save(_message())
                raise _RollbackError
        except _RollbackError:
            pass
        assert current_async_session() is session
    assert await outbox.raw.count_documents({}) == 0
    assert outbox.connections.open_sessions == 0


async def test_current_session_outside_transaction_expect_clear_error(outbox: MongoOutbox) -> None:
    """Outside a transaction the accessors and save refuse with our errors."""
    with pytest.raises(MongoTransactionNotActiveError, match="@Transactional"):
        current_async_session()
    with pytest.raises(MongoTransactionNotActiveError):
        current_session()
    with pytest.raises(OutboxTransactionRequiredError):
        await outbox.storage().save(_message())


async def test_async_transaction_commit_fails_expect_session_ended_and_error_translated(
    outbox: MongoOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient commit failure surfaces as our retryable error; the session still ends."""
    with pytest.raises(MongoTransactionRetryableError, match="run the use case again"):
        async with AsyncMongoTransaction(outbox.config, outbox.connections):
            refuse_commit(monkeypatch)
            await outbox.storage().save(_message())
    assert outbox.connections.open_sessions == 0
    assert await outbox.raw.count_documents({}) == 0


async def test_async_transaction_unknown_commit_result_expect_commit_retried(
    outbox: MongoOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An UnknownTransactionCommitResult commit is retried (commits are idempotent) and succeeds."""
    sent = _message()
    calls: list[int] = []
    async with AsyncMongoTransaction(outbox.config, outbox.connections):
        session = current_async_session()
        real_commit = session.commit_transaction

        async def flaky() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise OperationFailure("timed out", 50, {"errorLabels": ["UnknownTransactionCommitResult"]})
            await real_commit()

        monkeypatch.setattr(session, "commit_transaction", flaky)
        await outbox.storage().save(sent)
    assert len(calls) == 2
    assert await outbox.raw.find_one({"_id": sent.id}) is not None


def test_translate_error_expect_labels_mapped_to_actions() -> None:
    """Error labels become our retryable error with what to do; other errors pass through."""
    unknown = translate_error(OperationFailure("x", 91, {"errorLabels": ["UnknownTransactionCommitResult"]}))
    assert isinstance(unknown, MongoTransactionRetryableError)
    assert "may or may not be stored" in str(unknown)
    plain = OperationFailure("duplicate", 11000)
    assert translate_error(plain) is plain


def test_sync_transaction_commit_and_rollback_expect_atomic(outbox: MongoOutbox) -> None:
    """The sync transaction binds its session; commit stores both, rollback neither."""
    kept, dropped = _message(), _message()
    storage = outbox.sync_storage()
    with MongoTransaction(outbox.config, outbox.connections):
        session = current_session()
        session.client[DATABASE][_business(outbox)].insert_one({"_id": "kept"}, session=session)
        storage.save(kept)
    try:
        with MongoTransaction(outbox.config, outbox.connections):
            session = current_session()
            session.client[DATABASE][_business(outbox)].insert_one({"_id": "dropped"}, session=session)
            storage.save(dropped)
            raise _RollbackError
    except _RollbackError:
        pass
    raw = outbox.connections.collection()
    assert [d["_id"] for d in raw.find({})] == [kept.id]
    assert [d["_id"] for d in raw.database[_business(outbox)].find({})] == ["kept"]
    assert outbox.connections.open_sessions == 0


async def test_motor_transaction_expect_motor_session_shared(outbox: MongoOutbox) -> None:
    """With the Motor driver the accessor hands out Motor's session, usable on Motor collections."""
    pytest.importorskip("motor", reason="Motor not installed (spakky-outbox[motor])")
    config = outbox_settings(outbox.server.url, outbox.config.collection, MongoDriver.MOTOR)
    connections = MongoOutboxConnectionManager(config, outbox.outbox_config)
    sent = _message()
    try:
        async with AsyncMongoTransaction(config, connections):
            session = current_async_session()
            assert type(session).__module__.startswith("motor")
            await session.client[DATABASE][_business(outbox)].insert_one({"_id": "motor"}, session=session)
            await outbox.storage().__class__(connections, outbox.outbox_config).save(sent)
        assert await outbox.raw.database[_business(outbox)].find_one({"_id": "motor"}) is not None
        assert await outbox.raw.find_one({"_id": sent.id}) is not None
        assert connections.open_sessions == 0
    finally:
        await connections.aclose()


def test_check_transactions_standalone_expect_replica_set_instructions(
    outbox: MongoOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standalone server's refusal becomes an error saying how to start a single-node replica set."""
    standalone = OperationFailure(
        "Transaction numbers are only allowed on a replica set member or mongos", 20,
        {"errmsg": "Transaction numbers are only allowed on a replica set member or mongos", "code": 20},
    )
    manager = MongoOutboxConnectionManager(outbox.config, OutboxConfig())
    collection = manager.collection()

    def refuse(*_: Any, **__: Any) -> None:
        raise standalone

    monkeypatch.setattr(type(collection), "find_one", refuse)
    try:
        with pytest.raises(MongoReplicaSetRequiredError) as caught:
            manager.check_transactions()
    finally:
        manager.close()
    assert "--replSet rs0" in str(caught.value) and "rs.initiate()" in str(caught.value)


def test_check_transactions_this_server_expect_accepted(outbox: MongoOutbox) -> None:
    """The server the tests run on runs transactions, so startup's check passes."""
    outbox.connections.check_transactions()


async def test_concurrent_transactions_expect_both_committed(outbox: MongoOutbox) -> None:
    """Two use cases committing at the same time both store their messages (real replica sets)."""
    outbox.server.require_real("concurrent transactions")
    sent = [_message("k"), _message("k")]
    both_open = asyncio.Barrier(2)

    async def write(message: OutboxMessage) -> None:
        async with AsyncMongoTransaction(outbox.config, outbox.connections):
            await outbox.storage().save(message)
            await both_open.wait()  # neither commits before both have written

    await asyncio.gather(*(write(m) for m in sent))
    assert await outbox.raw.count_documents({}) == 2



def test_wire_server_disjoint_transactions_expect_later_commit_conflicts(outbox: MongoOutbox) -> None:
    """The wire server fails the later of two open transactions at commit even on disjoint documents.

    A replica set conflicts only on the same document (the test above); the in-process
    stand-in refuses a commit that overlaps another transaction, without the
    TransientTransactionError label (and which of the two writes it keeps then varies
    with the collections involved: it does not isolate concurrent transactions). A use
    case's insert beside a relay's claim can fail there alone: why the MongoDB quickstart
    test runs once more on the wire server only.
    """
    if not outbox.server.wire:
        pytest.skip("pins the in-process wire server's commit check")
    client: MongoClient[dict[str, Any]] = MongoClient(outbox.server.url)
    database = client[DATABASE]
    try:
        with client.start_session() as use_case, client.start_session() as relay:
            use_case.start_transaction()
            relay.start_transaction()
            database[_business(outbox)].insert_one({"_id": "order"}, session=use_case)
            database[outbox.config.collection].insert_one({"_id": "claimed"}, session=relay)
            relay.commit_transaction()
            with pytest.raises(OperationFailure, match="Write conflict during transaction commit") as caught:
                use_case.commit_transaction()
        assert not caught.value.has_error_label("TransientTransactionError")
        assert translate_error(caught.value) is caught.value
    finally:
        client.close()
