"""What the storages ask of MongoDB, written once for the sync and asyncio drivers.

Each storage operation is a *plan*: a generator that yields database
operations (`Find`, `Aggregate`, `UpdateMany`...) and receives their results.
`run_plan` executes a plan on a PyMongo ``Collection``; `run_plan_async` on a
PyMongo ``AsyncCollection`` or a Motor collection. So the claim algorithm,
the fences and the administration queries exist once.

Every time rule uses the server clock (``$$NOW`` in expressions and update
pipelines), so relays on different hosts agree.
"""

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic
from typing import Any, Self, cast
from uuid import UUID

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import OperationFailure
from spakky.outbox.backend.claims import (
    choose_batch,
    key_run,
    undecodable_reason,
    within_bytes,
)
from spakky.outbox.common.config import DEFAULT_BATCH_MAX_BYTES
from spakky.outbox.common.figures import RELAY_FIGURES_RETENTION, RelayFigures
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KEY_HEADS_WINDOW,
    RELAY_CLAIMS_WINDOW,
    STATS_COUNT_CAP,
    KeyHead,
    MessageDetail,
    OutboxStats,
    RelayClaims,
    relay_claims_of,
)
from spakky.plugins.outbox_mongodb.documents import (
    ABANDONED,
    KEYED_PENDING,
    KEYLESS_PENDING,
    ORDER,
    Document,
    IndexSpec,
    State,
    position,
    published_index,
    to_figures,
    to_figures_document,
    to_listed_message,
    to_message,
)
from spakky.plugins.outbox_mongodb.driver import maybe_await

_INDEX_NOT_FOUND = 27
"""``IndexNotFound``: another process dropped the index first."""


@dataclass(frozen=True)
class Find:
    """``find`` with projection, sort and limit; returns the documents."""

    filter: Mapping[str, Any]
    projection: Mapping[str, Any] | None = None
    sort: Mapping[str, int] | None = None
    limit: int = 0


@dataclass(frozen=True)
class Aggregate:
    """``aggregate``; returns the documents."""

    pipeline: Sequence[Mapping[str, Any]]
    max_time_ms: int | None = None
    """Server-side limit (``maxTimeMS``); None: none."""


@dataclass(frozen=True)
class InsertOne:
    """``insert_one``; returns nothing."""

    document: Document


@dataclass(frozen=True)
class UpdateMany:
    """``update_many`` (operators or a pipeline); returns the matched count."""

    filter: Mapping[str, Any]
    update: Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class DeleteMany:
    """``delete_many``; returns the deleted count."""

    filter: Mapping[str, Any]


@dataclass(frozen=True)
class Count:
    """``count_documents``; returns the count (up to ``limit`` when set)."""

    filter: Mapping[str, Any]
    limit: int = 0
    hint: str | None = None
    """The index to count along (its name)."""
    max_time_ms: int | None = None


@dataclass(frozen=True)
class CollectionExists:
    """Whether the collection exists; returns a bool."""


@dataclass(frozen=True)
class IndexInformation:
    """``index_information()``; returns name -> description."""


@dataclass(frozen=True)
class CreateIndex:
    """``create_index`` from an `IndexSpec`."""

    spec: IndexSpec


@dataclass(frozen=True)
class DropIndex:
    """``drop_index``; an index already gone is fine."""

    name: str


type Operation = (
    Find | Aggregate | InsertOne | UpdateMany | DeleteMany | Count | CollectionExists
    | IndexInformation | CreateIndex | DropIndex
)
type Plan[T] = Generator[Operation, Any, T]


def _index_options(spec: IndexSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"name": spec.name}
    if spec.partial:
        options["partialFilterExpression"] = dict(spec.partial)
    if spec.expire_after_seconds is not None:
        options["expireAfterSeconds"] = spec.expire_after_seconds
    return options


def _execute(operation: Operation, collection: Collection[Document]) -> Any:
    match operation:
        case Find(filter, projection, sort, limit):
            return collection.find(filter, projection, sort=_sort(sort), limit=limit).to_list()
        case Aggregate(pipeline, max_time_ms):
            return collection.aggregate(list(pipeline), **_limits(max_time_ms)).to_list()
        case InsertOne(document):
            collection.insert_one(document)
            return None
        case UpdateMany(filter, update):
            return collection.update_many(filter, _update(update)).matched_count
        case DeleteMany(filter):
            return collection.delete_many(filter).deleted_count
        case Count(filter, limit, hint, max_time_ms):
            return collection.count_documents(filter, **_counting(limit, hint, max_time_ms))
        case CollectionExists():
            return bool(collection.database.list_collection_names(filter={"name": collection.name}))
        case IndexInformation():
            return collection.index_information()
        case CreateIndex(spec):
            return collection.create_index(list(spec.keys), **_index_options(spec))
        case DropIndex(name):
            try:
                return collection.drop_index(name)
            except OperationFailure as error:
                if error.code != _INDEX_NOT_FOUND:
                    raise
                return None


async def _execute_async(operation: Operation, collection: Any) -> Any:
    # ``collection``: a PyMongo AsyncCollection or a Motor collection (untyped).
    match operation:
        case Find(filter, projection, sort, limit):
            cursor = collection.find(filter, projection, sort=_sort(sort), limit=limit)
            return await cursor.to_list(None)
        case Aggregate(pipeline, max_time_ms):
            cursor = await maybe_await(collection.aggregate(list(pipeline), **_limits(max_time_ms)))
            return await cursor.to_list(None)
        case InsertOne(document):
            await collection.insert_one(document)
            return None
        case UpdateMany(filter, update):
            return (await collection.update_many(filter, _update(update))).matched_count
        case DeleteMany(filter):
            return (await collection.delete_many(filter)).deleted_count
        case Count(filter, limit, hint, max_time_ms):
            return await collection.count_documents(filter, **_counting(limit, hint, max_time_ms))
        case CollectionExists():
            names = await collection.database.list_collection_names(filter={"name": collection.name})
            return bool(names)
        case IndexInformation():
            return await collection.index_information()
        case CreateIndex(spec):
            return await collection.create_index(list(spec.keys), **_index_options(spec))
        case DropIndex(name):
            try:
                return await collection.drop_index(name)
            except OperationFailure as error:
                if error.code != _INDEX_NOT_FOUND:
                    raise
                return None


def _limits(max_time_ms: int | None) -> dict[str, Any]:
    return {} if max_time_ms is None else {"maxTimeMS": max_time_ms}


def _counting(limit: int, hint: str | None, max_time_ms: int | None) -> dict[str, Any]:
    options = _limits(max_time_ms)
    if limit > 0:
        options["limit"] = limit
    if hint is not None:
        options["hint"] = hint
    return options


def _sort(sort: Mapping[str, int] | None) -> list[tuple[str, int]] | None:
    return None if sort is None else list(sort.items())


def _update(update: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
    return dict(update) if isinstance(update, Mapping) else list(update)


class _Steps[T]:
    """A plan walked one operation at a time: iterate for its operations, set `reply` after each."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self.reply: Any = None
        """The result of the operation last yielded, sent to the plan next."""
        self.result: T | None = None
        """What the plan returned, once the iteration ended."""

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Operation:
        try:
            return self._plan.send(self.reply)
        except StopIteration as finished:
            self.result = cast(T, finished.value)
            raise StopIteration from None


def run_plan[T](plan: Plan[T], collection: Collection[Document]) -> T:
    """Execute ``plan`` with the synchronous driver."""
    steps = _Steps(plan)
    for operation in steps:
        steps.reply = _execute(operation, collection)
    return cast(T, steps.result)


async def run_plan_async[T](plan: Plan[T], collection: Any) -> T:
    """Execute ``plan`` with PyMongo's asyncio driver or Motor."""
    steps = _Steps(plan)
    for operation in steps:
        steps.reply = await _execute_async(operation, collection)
    return cast(T, steps.result)


def ensure_indexes(indexes: Iterable[IndexSpec]) -> Plan[None]:
    """Create missing indexes; recreate one whose definition changed (e.g. the TTL).

    Never run it inside a transaction: the storages run it at startup.
    """
    existing: dict[str, Mapping[str, Any]] = yield IndexInformation()
    for spec in indexes:
        info = existing.get(spec.name)
        if info is not None and spec.matches(info):
            continue
        if info is not None:
            yield DropIndex(spec.name)
        yield CreateIndex(spec)


def write_figures(figures: RelayFigures) -> Plan[None]:
    """Insert one relay window into the figures collection, then delete the windows past retention before it."""
    yield InsertOne(to_figures_document(figures))
    yield DeleteMany({"ended_at": {"$lt": figures.ended_at - RELAY_FIGURES_RETENTION}})


def read_figures(since: datetime, limit: int) -> Plan[list[RelayFigures]]:
    """Up to ``limit`` relay windows that ended after ``since``, the latest end first (along `FIGURES_ENDED`)."""
    if limit <= 0:
        return []
    documents: list[Document] = yield Find(
        {"ended_at": {"$gt": since}}, {"_id": 0}, {"ended_at": -1}, limit
    )
    return [to_figures(document) for document in documents]


def _not_before_now(field_name: str) -> dict[str, Any]:
    """``field <= $$NOW``; a null or missing field counts as due (BSON orders null first)."""
    return {"$lte": [f"${field_name}", "$$NOW"]}


_PAYLOAD_SIZE: dict[str, Any] = {
    "$cond": [{"$eq": [{"$type": "$payload"}, "binData"]}, {"$binarySize": "$payload"}, 0]
}
"""A payload's length in bytes, computed by the server (``$binarySize``, MongoDB 4.4+
as ``$unionWith``): a claim's byte budget is decided without a payload leaving
it; a damaged payload counts 0 (decoding it abandons the message)."""


@dataclass
class _Candidate:
    id: Any
    key: str | None
    position: int
    size: int


def _held[D: MessageDetail](kind: type[D], document: Document) -> D | None:
    """A document read with ``observed_at`` (``$$NOW``) as ``kind``: its live claim or its retry time.

    ``available_at`` is the claim's end while ``claimed_by`` is set, else the
    retry time; either holds only while in the future and the message is
    pending. None when the id is not a UUID.
    """
    message = to_listed_message(document)
    if message is None:
        return None
    now, until = document["observed_at"], document.get("available_at")
    pending = document.get("state") == State.PENDING.value
    due = until if pending and isinstance(until, datetime) and until > now else None
    owner = document.get("claimed_by")
    live = due is not None and owner is not None
    return kind(message, str(owner) if live else None, due if live else None, None if live else due)


@dataclass
class OutboxQueries:
    """The plans of one storage instance, fenced by its owner token."""

    collection_name: str
    claim_timeout_ms: int
    claim_lease_ms: int
    owner: str = field(default_factory=lambda: ObjectId().binary.hex())
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    """Payload bytes one claim may hold (a larger message is claimed alone)."""
    key_cursor: str | None = None
    """Where the next keyed walk starts: keys are visited in turn, across claims."""
    count_cap: int = STATS_COUNT_CAP
    """Where `stats` stops counting each state."""

    # --- filters and updates ------------------------------------------------

    def _eligible(self, max_retry: int) -> dict[str, Any]:
        return {
            "state": State.PENDING.value,
            "retry_count": {"$lt": max_retry},
            "$expr": _not_before_now("available_at"),
        }

    def _owned(self, message_ids: Sequence[UUID]) -> dict[str, Any]:
        return {"_id": {"$in": list(message_ids)}, "state": State.PENDING.value, "claimed_by": self.owner}

    @staticmethod
    def _unclaimed(**extra: Any) -> list[dict[str, Any]]:
        return [{"$set": {"claimed_by": None, "claim_id": None, "claimed_at": None, **extra}}]

    # --- claims -----------------------------------------------------------------

    def claim(self, limit: int, max_retry: int) -> Plan[list[OutboxMessage]]:
        """Claim up to ``limit`` messages: keyless oldest first, keys as runs.

        Reads candidates from the two lanes with their payload sizes, cuts
        them to the batch size and the byte budget (`within_bytes`), claims
        them with one update that re-checks eligibility, re-reads each claimed key's head to keep only a
        prefix that starts at the key's oldest undelivered message (another
        relay may have won part of it), then loads the documents; a document
        that cannot be decoded is abandoned with the reason.
        """
        if limit <= 0:
            return []
        run = key_run(limit)
        keyless_docs: list[Document] = yield Aggregate([
            {"$match": {**self._eligible(max_retry), "partition_key": None}},
            {"$sort": ORDER},
            {"$limit": limit},
            {"$project": {"saved_at": 1, "created_at": 1, "oid": 1, "size": _PAYLOAD_SIZE}},
        ])
        keyless = [_Candidate(d["_id"], None, position(d), d["size"]) for d in keyless_docs]
        start = self.key_cursor
        runs = yield from self._key_runs(limit, max_retry, run)
        chosen = within_bytes(
            choose_batch(keyless, runs, limit, lambda c: c.position), lambda c: c.size, self.batch_max_bytes
        )
        self._advance(start, runs, chosen)
        if not chosen:
            return []
        claim_id = ObjectId()
        hold_ms = min(self.claim_lease_ms, self.claim_timeout_ms)
        yield UpdateMany(
            {"_id": {"$in": [c.id for c in chosen]}, **self._eligible(max_retry)},
            [{"$set": {
                "claimed_by": self.owner,
                "claim_id": claim_id,
                "claimed_at": "$$NOW",
                "available_at": {"$add": ["$$NOW", hold_ms]},
            }}],
        )
        kept = yield from self._keep_key_prefixes(chosen, claim_id)
        documents: list[Document] = yield Find(
            {"_id": {"$in": kept}, "claimed_by": self.owner, "claim_id": claim_id}
        )
        documents.sort(key=position)
        messages: list[OutboxMessage] = []
        for document in documents:
            try:
                messages.append(to_message(document))
            except Exception as error:  # a damaged document must not stall the relay
                yield UpdateMany(
                    {"_id": document["_id"], "claimed_by": self.owner, "claim_id": claim_id},
                    self._unclaimed(
                        state=State.ABANDONED.value,
                        abandoned_at="$$NOW",
                        available_at=None,
                        last_error={"$literal": undecodable_reason(error)},
                    ),
                )
        return messages

    def _key_runs(self, limit: int, max_retry: int, run: int) -> Plan[list[list[_Candidate]]]:
        """Walk keys from the rotating cursor; per key, the eligible prefix of its head.

        One window reads the next pending messages in key order, so one round
        trip covers many shallow keys or one deep key; after a deep key the
        window shrinks to one run. At most ``2 * limit`` keys are visited.
        """
        runs: list[list[_Candidate]] = []
        taken = visited = 0
        start = cursor = self.key_cursor
        wrapped = False
        window = limit
        while taken < limit and visited < 2 * limit:
            keys: dict[str, Any] = {"$type": "string"}
            if cursor is not None:
                keys["$gt"] = cursor
            if wrapped and start is not None:
                keys["$lte"] = start
            docs: list[Document] = yield Aggregate([
                {"$match": {"state": State.PENDING.value, "partition_key": keys}},
                {"$sort": {"partition_key": 1, **ORDER}},
                {"$limit": window},
                {"$project": {
                    "partition_key": 1,
                    "saved_at": 1,
                    "created_at": 1,
                    "oid": 1,
                    "size": _PAYLOAD_SIZE,
                    "ok": {"$and": [
                        {"$lt": ["$retry_count", max_retry]},
                        _not_before_now("available_at"),
                    ]},
                }},
            ])
            groups: dict[str, list[Document]] = {}
            for doc in docs:
                groups.setdefault(doc["partition_key"], []).append(doc)
            for key, group in groups.items():
                visited += 1
                cursor = key
                prefix: list[_Candidate] = []
                for doc in group[:run]:
                    if not doc["ok"]:
                        break
                    prefix.append(_Candidate(doc["_id"], key, position(doc), doc["size"]))
                if prefix:
                    runs.append(prefix)
                    taken += len(prefix)
                if taken >= limit or visited >= 2 * limit:
                    break
            if taken >= limit or visited >= 2 * limit:
                break
            if len(docs) < window:  # walked past the last key
                if wrapped or start is None:
                    cursor = cursor if wrapped else None
                    break
                wrapped, cursor = True, None
            window = run if len(groups) == 1 else max(run, limit - taken)
        self.key_cursor = cursor
        return runs

    def _advance(self, start: str | None, runs: Sequence[Sequence[_Candidate]], chosen: Sequence[_Candidate]) -> None:
        """Leave the key cursor after the last key whose run the claim took whole.

        The walk moved it past every key it visited; a key cut by the batch
        size or the byte budget comes first in the next claim instead of
        waiting for the walk to come round again.
        """
        taken = {c.id for c in chosen}
        finished = start
        for run in runs:
            if not taken.issuperset(c.id for c in run):
                self.key_cursor = finished
                return
            finished = run[0].key

    def _keep_key_prefixes(self, chosen: Sequence[_Candidate], claim_id: ObjectId) -> Plan[list[Any]]:
        """Keep, per claimed key, only the claimed messages that start at the key's head.

        Between reading candidates and claiming them another relay may have
        claimed part of a key, or a requeued message may have become its head;
        whatever of a key is not a prefix held by this claim is released.
        """
        keyless = [c.id for c in chosen if c.key is None]
        runs: dict[str, list[_Candidate]] = {}
        for candidate in chosen:
            if candidate.key is not None:
                runs.setdefault(candidate.key, []).append(candidate)
        if not runs:
            return keyless
        branches = [
            [
                {"$match": {"state": State.PENDING.value, "partition_key": {"$eq": key, "$type": "string"}}},
                {"$sort": ORDER},
                {"$limit": len(run)},
                {"$project": {"partition_key": 1, "claim_id": 1}},
            ]
            for key, run in runs.items()
        ]
        pipeline = [*branches[0], *({"$unionWith": {"coll": self.collection_name, "pipeline": b}} for b in branches[1:])]
        heads: list[Document] = yield Aggregate(pipeline)
        kept: list[Any] = []
        broken: set[str] = set()
        for doc in heads:
            key = doc["partition_key"]
            if key in broken:
                continue
            if doc.get("claim_id") == claim_id:
                kept.append(doc["_id"])
            else:
                broken.add(key)
        held = set(kept)
        lost = [c.id for run in runs.values() for c in run if c.id not in held]
        if lost:
            yield UpdateMany(
                {"_id": {"$in": lost}, "claimed_by": self.owner, "claim_id": claim_id},
                self._unclaimed(available_at=None),
            )
        return keyless + kept

    # --- acknowledgements -----------------------------------------------------

    def publish(self, message_ids: Sequence[UUID]) -> Plan[int]:
        """Mark this instance's claimed messages published."""
        if not message_ids:
            return 0
        return (yield UpdateMany(
            self._owned(message_ids),
            self._unclaimed(state=State.PUBLISHED.value, published_at="$$NOW", available_at=None),
        ))

    def increment_retry(self, message_id: UUID) -> Plan[int]:
        """Spend one retry; the claim stays until it ends (6.x behaviour)."""
        return (yield UpdateMany(self._owned([message_id]), {"$inc": {"retry_count": 1}}))

    def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> Plan[int]:
        """Spend one retry, keep ``error``, release the claim until the delay passed."""
        return (yield UpdateMany(
            self._owned([message_id]),
            self._unclaimed(
                retry_count={"$add": ["$retry_count", 1]},
                last_error={"$literal": error},
                available_at={"$add": ["$$NOW", max(0, round(delay_seconds * 1000))]},
            ),
        ))

    def abandon(self, message_id: UUID, error: str | None) -> Plan[int]:
        """Give up on a message, keeping it readable with its reason."""
        reason: dict[str, Any] = {} if error is None else {"last_error": {"$literal": error}}
        return (yield UpdateMany(
            self._owned([message_id]),
            self._unclaimed(state=State.ABANDONED.value, abandoned_at="$$NOW", available_at=None, **reason),
        ))

    def release(self, message_ids: Sequence[UUID]) -> Plan[int]:
        """Drop this instance's claims without spending budget."""
        if not message_ids:
            return 0
        return (yield UpdateMany(self._owned(message_ids), self._unclaimed(available_at=None)))

    def renew(self, message_ids: Sequence[UUID]) -> Plan[int]:
        """Extend the lease of claims this instance holds that are younger than the timeout."""
        if not message_ids:
            return 0
        return (yield UpdateMany(
            {
                **self._owned(message_ids),
                "$expr": {"$gt": ["$claimed_at", {"$subtract": ["$$NOW", self.claim_timeout_ms]}]},
            },
            [{"$set": {"available_at": {"$min": [
                {"$add": ["$$NOW", self.claim_lease_ms]},
                {"$add": ["$claimed_at", self.claim_timeout_ms]},
            ]}}}],
        ))

    # --- administration -----------------------------------------------------------

    def stats(self, timeout_seconds: float) -> Plan[OutboxStats]:
        """Counts by state up to `STATS_COUNT_CAP` along the partial indexes, and the oldest pending age; O(cap) reads.

        Each count reads at most the cap of one partial index's entries. The
        oldest pending message is the oldest of the keyless index's head and
        the heads (first in save order) of the first ``cap`` partition keys
        in key order: the keyed count's read gives the heads of the keys it
        covers, and when it stopped at the cap the walk goes on key by key,
        one index entry per key (``partition_key > last``), until ``cap`` keys
        were seen. With at most ``cap`` pending keys the age is exact; past
        them it is the oldest among those keys' heads, a lower bound of the
        true age (a later key may hold an older head). Every operation carries
        what is left of ``maxTimeMS``: the server stops a read the probe gave
        up on.
        """
        cap, limit = self.count_cap, max(1, round(timeout_seconds * 1000))
        deadline = monotonic() + limit / 1000
        lanes: list[Document] = []
        for spec in (KEYLESS_PENDING, KEYED_PENDING):
            found: list[Document] = yield Aggregate([
                {"$match": dict(spec.partial)},
                {"$sort": dict(spec.keys)},
                {"$limit": cap},
                # Per key (one group in the keyless lane): its entries read and
                # its head, the first entry in index order.
                {"$group": {
                    "_id": "$partition_key",
                    "n": {"$sum": 1},
                    "claimed": {"$sum": {"$cond": [
                        {"$and": [{"$gt": ["$claimed_by", None]}, {"$gt": ["$available_at", "$$NOW"]}]}, 1, 0,
                    ]}},
                    "head": {"$first": "$created_at"},
                    "now": {"$max": "$$NOW"},
                }},
                {"$group": {
                    "_id": None,
                    "n": {"$sum": "$n"},
                    "claimed": {"$sum": "$claimed"},
                    "oldest": {"$min": "$head"},
                    "keys": {"$sum": 1},
                    "last": {"$max": "$_id"},
                    "now": {"$max": "$now"},
                }},
            ], limit)
            lanes.append(found[0] if found else {"n": 0, "claimed": 0, "oldest": None, "keys": 0, "last": None})
        heads = [lane["oldest"] for lane in lanes]
        keyed = lanes[1]
        seen, last = int(keyed["keys"]), keyed["last"]
        if int(keyed["n"]) >= cap:
            # The capped read ended inside the run of key ``last``: visit the
            # next keys' heads, one index entry each, up to ``cap`` keys.
            while seen < cap and isinstance(last, str):
                head: list[Document] = yield Aggregate([
                    {"$match": {**KEYED_PENDING.partial, "partition_key": {"$type": "string", "$gt": last}}},
                    {"$sort": dict(KEYED_PENDING.keys)},
                    {"$limit": 1},
                    {"$project": {"_id": 0, "partition_key": 1, "created_at": 1}},
                ], max(1, round((deadline - monotonic()) * 1000)))
                if not head:
                    break
                heads.append(head[0].get("created_at"))
                last, seen = head[0].get("partition_key"), seen + 1
        kept = published_index(None)
        published: int = yield Count(dict(kept.partial), cap, kept.name, limit)
        abandoned: int = yield Count(dict(ABANDONED.partial), cap, ABANDONED.name, limit)
        times = [t for t in heads if isinstance(t, datetime)]
        now = max((lane["now"] for lane in lanes if isinstance(lane.get("now"), datetime)), default=None)
        age = max(0.0, (now - min(times)).total_seconds()) if times and now is not None else None
        return OutboxStats(
            pending=min(cap, sum(int(lane["n"]) for lane in lanes)),
            claimed=min(cap, sum(int(lane["claimed"]) for lane in lanes)),
            published=published,
            abandoned=abandoned,
            oldest_pending_age_seconds=age,
            count_cap=cap,
        )

    def list_abandoned(self, limit: int) -> Plan[list[Document]]:
        """Abandoned documents, oldest first."""
        if limit <= 0:
            return []
        return (yield Find({"state": State.ABANDONED.value}, sort=ORDER, limit=limit))

    def key_heads(self, limit: int, after: UUID | None) -> Plan[list[KeyHead]]:
        """The heads of up to ``limit`` keys, oldest first, after the head ``after``, with their claim and retry time.

        One aggregation along the keyed index: its first entry of each key
        (a distinct scan, one entry per key, never a key's whole run), for the
        first `KEY_HEADS_WINDOW` keys, ordered by save order; claim and retry
        time by the server clock.
        """
        if limit <= 0:
            return []
        stages: list[Document] = [
            {"$match": dict(KEYED_PENDING.partial)},
            {"$sort": dict(KEYED_PENDING.keys)},
            {"$group": {"_id": "$partition_key", "head": {"$first": "$$ROOT"}}},
            {"$sort": {"_id": 1}},
            {"$limit": KEY_HEADS_WINDOW},
            {"$replaceRoot": {"newRoot": "$head"}},
        ]
        if after is not None:
            found: list[Document] = yield Find({"_id": after}, dict.fromkeys(ORDER, 1), limit=1)
            if found:
                mark = {name: found[0].get(name) for name in ORDER}
                later: list[Document] = []
                for depth, name in enumerate(ORDER):
                    same = {earlier: mark[earlier] for earlier in list(ORDER)[:depth]}
                    later.append({**same, name: {"$gt": mark[name]}})
                stages.append({"$match": {"$or": later}})
        stages += [
            {"$sort": ORDER},
            {"$limit": limit},
            {"$addFields": {"observed_at": "$$NOW"}},
        ]
        documents: list[Document] = yield Aggregate(stages)
        return [head for document in documents if (head := _held(KeyHead, document)) is not None]

    def get_message(self, message_id: UUID) -> Plan[MessageDetail | None]:
        """One message in whatever state, with its claim and retry time by the server clock (one ``_id`` lookup)."""
        documents: list[Document] = yield Aggregate(
            [{"$match": {"_id": message_id}}, {"$limit": 1}, {"$addFields": {"observed_at": "$$NOW"}}]
        )
        return next((d for d in (_held(MessageDetail, document) for document in documents) if d is not None), None)

    def relay_claims(self) -> Plan[list[RelayClaims]]:
        """Live claims among the first `RELAY_CLAIMS_WINDOW` entries of each pending index, grouped by owner.

        One aggregation per lane along its partial index (as `stats` counts
        claims), the claim judged by the server clock.
        """
        claims: list[tuple[str, datetime]] = []
        for spec in (KEYLESS_PENDING, KEYED_PENDING):
            found: list[Document] = yield Aggregate([
                {"$match": dict(spec.partial)},
                {"$sort": dict(spec.keys)},
                {"$limit": RELAY_CLAIMS_WINDOW},
                {"$match": {"$expr": {"$and": [
                    {"$gt": ["$claimed_by", None]}, {"$gt": ["$available_at", "$$NOW"]},
                ]}}},
                {"$project": {"_id": 0, "claimed_by": 1, "available_at": 1}},
            ])
            claims += [(str(d["claimed_by"]), d["available_at"]) for d in found]
        return relay_claims_of(claims)

    def requeue_abandoned(self, message_ids: Sequence[UUID] | None, limit: int) -> Plan[int]:
        """Make up to ``limit`` abandoned messages pending with a fresh budget."""
        if limit <= 0 or (message_ids is not None and not message_ids):
            return 0
        wanted: dict[str, Any] = {"state": State.ABANDONED.value}
        if message_ids is not None:
            wanted["_id"] = {"$in": list(message_ids)}
        found: list[Document] = yield Find(wanted, {"_id": 1}, sort=ORDER, limit=limit)
        if not found:
            return 0
        return (yield UpdateMany(
            {"_id": {"$in": [d["_id"] for d in found]}, "state": State.ABANDONED.value},
            self._unclaimed(
                state=State.PENDING.value,
                retry_count={"$literal": 0},
                abandoned_at=None,
                available_at=None,
            ),
        ))

    def purge_published(self, before: datetime | timedelta, limit: int) -> Plan[int]:
        """Delete up to ``limit`` messages published before ``before`` (an age: before ``$$NOW``)."""
        if limit <= 0:
            return 0
        old: dict[str, Any] = {"state": State.PUBLISHED.value}
        if isinstance(before, timedelta):
            ago = {"$subtract": ["$$NOW", round(before.total_seconds() * 1000)]}
            old["$expr"] = {"$lt": ["$published_at", ago]}
        else:
            old["published_at"] = {"$lt": before}
        found: list[Document] = yield Find(old, {"_id": 1}, limit=limit)
        if not found:
            return 0
        return (yield DeleteMany({"_id": {"$in": [d["_id"] for d in found]}, **old}))
