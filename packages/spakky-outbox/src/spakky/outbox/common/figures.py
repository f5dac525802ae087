"""The relays' own figures: what each relay delivered in a window, as it writes them to the storage.

A relay counts what it already measures for the metrics port (messages
relayed, refused, abandoned; claims; each send's commit-to-send wait) and,
every ``FIGURES_INTERVAL_SECONDS``, writes one `RelayFigures` record of the
window just ended to a storage with the relay-figures capability. The console
reads the windows of every relay back and merges them per time slot
(`merge_figures`): the waits are kept as counts per fixed bucket
(`COMMIT_TO_SEND_BUCKETS`), so windows of several relays add up.
"""

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

COMMIT_TO_SEND_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
"""Upper bounds (seconds) of the commit-to-send buckets: milliseconds when the relay
keeps up, up to an hour for a backlog or a broker outage. A window keeps one count per
bound plus one for waits past the last (the OpenTelemetry histogram uses the same bounds)."""

RELAY_FIGURES_RETENTION = timedelta(hours=24)
"""How long storages keep the relays' windows: a write deletes those that ended
this long before the window it writes."""

RELAY_FIGURES_READ_LIMIT = 2_000
"""Most windows one `relay_figures` read returns (an hour of 10 s windows of five relays takes 1,800)."""

RELAY_NAME_MAX = 200
"""Longest relay name a window keeps (longer names are cut)."""


def wait_bucket(seconds: float) -> int:
    """Index of the commit-to-send bucket ``seconds`` falls in (a wait equal to a bound counts in its bucket)."""
    return bisect.bisect_left(COMMIT_TO_SEND_BUCKETS, seconds)


@dataclass(frozen=True)
class RelayFigures:
    """One relay's figures over one window, as written to and read from the storage."""

    relay: str
    """The relay that measured them (host and process id)."""
    started_at: datetime
    """Start of the window (timezone-aware, the relay's clock)."""
    ended_at: datetime
    """End of the window (timezone-aware, the relay's clock)."""
    sent: int
    """Messages delivered and acknowledged in the window."""
    refused: int
    """Refusals recorded (each spends a retry)."""
    abandoned: int
    """Messages given up on."""
    batches: int
    """Claims that returned messages."""
    commit_to_send: tuple[int, ...]
    """Sends that went through, counted per `COMMIT_TO_SEND_BUCKETS` bucket (one more than the bounds)."""
    commit_to_send_max: float
    """Longest commit-to-send wait of the window (0 when nothing was sent)."""

    @property
    def seconds(self) -> float:
        """Length of the window."""
        return max(0.0, (self.ended_at - self.started_at).total_seconds())

    def idle(self) -> bool:
        """Whether nothing happened in the window (relays write no idle window)."""
        return not (self.sent or self.refused or self.abandoned or self.batches or any(self.commit_to_send))


def quantile(buckets: Sequence[int], q: float, maximum: float) -> float | None:
    """Estimate the ``q`` quantile (0-1) of the waits counted in ``buckets``; None when there are none.

    Linear within the bucket that holds it (as Prometheus' ``histogram_quantile``);
    never past ``maximum``, the longest wait seen, which also bounds the last bucket.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = 0.0 if index == 0 else COMMIT_TO_SEND_BUCKETS[index - 1]
            high = COMMIT_TO_SEND_BUCKETS[index] if index < len(COMMIT_TO_SEND_BUCKETS) else maximum
            return min(maximum, low + (high - low) * (rank - seen) / count)
        seen += count
    return maximum


@dataclass(frozen=True)
class FiguresSlot:
    """The windows of every relay that ended in one time slot, added up."""

    start: datetime
    """Start of the slot."""
    seconds: float
    """Length of the slot."""
    relays: int
    """Distinct relays with a window ending in the slot."""
    sent: int
    """Messages delivered in the slot's windows."""
    refused: int
    """Refusals in the slot's windows."""
    abandoned: int
    """Messages abandoned in the slot's windows."""
    batches: int
    """Claims that found work in the slot's windows."""
    commit_to_send: tuple[int, ...]
    """Waits counted per bucket, summed over the windows."""
    commit_to_send_max: float
    """Longest wait of the slot's windows."""

    @property
    def sent_per_second(self) -> float:
        """Delivery rate over the slot."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50(self) -> float | None:
        """Median commit-to-send wait (an estimate from the buckets); None when nothing was sent."""
        return quantile(self.commit_to_send, 0.5, self.commit_to_send_max)

    @property
    def p95(self) -> float | None:
        """95th percentile commit-to-send wait (an estimate from the buckets); None when nothing was sent."""
        return quantile(self.commit_to_send, 0.95, self.commit_to_send_max)


def merge_figures(
    windows: Iterable[RelayFigures], since: datetime, until: datetime, slot: timedelta
) -> list[FiguresSlot]:
    """Add up ``windows`` per ``slot`` from ``since`` to ``until``, oldest slot first; slots without a window count zero.

    A window counts in the slot its end falls in; windows ending outside
    [``since``, ``until``) are left out.
    """
    slot_seconds = slot.total_seconds()
    count = max(1, math.ceil((until - since).total_seconds() / slot_seconds))
    width = len(COMMIT_TO_SEND_BUCKETS) + 1
    sums = [[0, 0, 0, 0] for _ in range(count)]
    waits = [[0] * width for _ in range(count)]
    longest = [0.0] * count
    relays: list[set[str]] = [set() for _ in range(count)]
    for window in windows:
        index = math.floor((window.ended_at - since).total_seconds() / slot_seconds)
        if not 0 <= index < count:
            continue
        totals = sums[index]
        totals[0] += window.sent
        totals[1] += window.refused
        totals[2] += window.abandoned
        totals[3] += window.batches
        for bucket, seen in enumerate(window.commit_to_send[:width]):
            waits[index][bucket] += seen
        longest[index] = max(longest[index], window.commit_to_send_max)
        relays[index].add(window.relay)
    return [
        FiguresSlot(
            start=since + slot * index,
            seconds=slot_seconds,
            relays=len(relays[index]),
            sent=sums[index][0],
            refused=sums[index][1],
            abandoned=sums[index][2],
            batches=sums[index][3],
            commit_to_send=tuple(waits[index]),
            commit_to_send_max=longest[index],
        )
        for index in range(count)
    ]


def encode_buckets(buckets: Sequence[int]) -> str:
    """The bucket counts as storages keep them in one text field: ``"0,3,12,..."``."""
    return ",".join(str(count) for count in buckets)


def decode_buckets(text: str) -> tuple[int, ...]:
    """The bucket counts from `encode_buckets`, padded or cut to the bucket layout."""
    width = len(COMMIT_TO_SEND_BUCKETS) + 1
    counts = tuple(int(part) for part in text.split(",") if part)[:width]
    return counts + (0,) * (width - len(counts))
