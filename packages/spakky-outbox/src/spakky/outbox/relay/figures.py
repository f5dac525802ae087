"""The relay's own figures: counted from what it reports to the metrics port, cut into windows for the storage.

`FiguresRecorder` stands between the relay and its metrics (if any): every
call goes on to them unchanged, and the few the figures need add to running
totals (an addition, and a bucket index for each commit-to-send wait), so the
relay measures nothing twice and its per-message path gains one call. The
relay's figures writer (a side task or thread, every ``FIGURES_INTERVAL_SECONDS``)
takes the difference since its last window with `FiguresRecorder.window`.
The totals only grow, so a count made while a window is taken lands in the next.
"""

from bisect import bisect_left
from datetime import UTC, datetime
from typing import override

from spakky.outbox.common.figures import (
    COMMIT_TO_SEND_BUCKETS,
    RELAY_NAME_MAX,
    RelayFigures,
)
from spakky.outbox.ports.metrics import BacklogRead, IOutboxMetrics


class FiguresRecorder(IOutboxMetrics):
    """The relay's metrics port: keeps the figures' running totals and passes every call on to ``metrics``."""

    def __init__(self, metrics: IOutboxMetrics | None) -> None:
        """Count for the figures in front of ``metrics`` (None: the relay has no other metrics)."""
        self._metrics = metrics
        self._sent = self._refused = self._abandoned = self._batches = 0
        self._waits = [0] * (len(COMMIT_TO_SEND_BUCKETS) + 1)
        self._longest = 0.0
        self._since = datetime.now(UTC)
        self._taken: tuple[int, ...] = self._totals()

    @property
    def forwards(self) -> bool:
        """Whether calls go on to other metrics (else the figures are all there is)."""
        return self._metrics is not None

    def _totals(self) -> tuple[int, ...]:
        return (self._sent, self._refused, self._abandoned, self._batches, *self._waits)

    def begin(self) -> None:
        """Start the first window now (the relay starts running)."""
        self._since = datetime.now(UTC)
        self._taken = self._totals()
        self._longest = 0.0

    def window(self, relay: str) -> RelayFigures | None:
        """The figures since the last window (or `begin`), named ``relay``; None when nothing happened."""
        now, totals = datetime.now(UTC), self._totals()
        longest, self._longest = self._longest, 0.0
        delta = [now_count - before for now_count, before in zip(totals, self._taken, strict=True)]
        figures = RelayFigures(
            relay=relay[:RELAY_NAME_MAX],
            started_at=self._since,
            ended_at=now,
            sent=delta[0],
            refused=delta[1],
            abandoned=delta[2],
            batches=delta[3],
            commit_to_send=tuple(delta[4:]),
            commit_to_send_max=longest,
        )
        self._since, self._taken = now, totals
        return None if figures.idle() else figures

    @override
    def record_relayed(self, count: int) -> None:
        self._sent += count
        if self._metrics is not None:
            self._metrics.record_relayed(count)

    @override
    def record_failed(self, count: int) -> None:
        self._refused += count
        if self._metrics is not None:
            self._metrics.record_failed(count)

    @override
    def record_abandoned(self, count: int) -> None:
        self._abandoned += count
        if self._metrics is not None:
            self._metrics.record_abandoned(count)

    @override
    def record_fenced(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.record_fenced(count)

    @override
    def record_backlog(self, pending: int, oldest_pending_age_seconds: float | None) -> None:
        if self._metrics is not None:
            self._metrics.record_backlog(pending, oldest_pending_age_seconds)

    @override
    def watch_backlog(self, read: BacklogRead) -> None:
        if self._metrics is not None:
            self._metrics.watch_backlog(read)

    @override
    def record_batch_size(self, count: int) -> None:
        self._batches += 1
        if self._metrics is not None:
            self._metrics.record_batch_size(count)

    @override
    def record_commit_to_send(self, seconds: float) -> None:
        # `wait_bucket` inlined: every send that goes through comes here.
        self._waits[bisect_left(COMMIT_TO_SEND_BUCKETS, seconds)] += 1
        if seconds > self._longest:
            self._longest = seconds
        if self._metrics is not None:
            self._metrics.record_commit_to_send(seconds)

    @override
    def record_send_duration(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.record_send_duration(seconds)

    @override
    def record_flush_duration(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.record_flush_duration(seconds)
