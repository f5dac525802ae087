"""The relays' figures in SQL: one row per relay window in the figures table beside the outbox table."""

from dataclasses import asdict
from datetime import datetime

from spakky.outbox.common.figures import (
    RELAY_FIGURES_RETENTION,
    RelayFigures,
    decode_buckets,
    encode_buckets,
)
from spakky.plugins.outbox_sqlalchemy.schema import figures_table
from sqlalchemy import Connection, RowMapping, delete, insert, select


def figures_row(row: RowMapping) -> RelayFigures:
    """A window from its row of the figures table."""
    return RelayFigures(
        relay=row["relay"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        sent=int(row["sent"]),
        refused=int(row["refused"]),
        abandoned=int(row["abandoned"]),
        batches=int(row["batches"]),
        commit_to_send=decode_buckets(row["commit_to_send"]),
        commit_to_send_max=float(row["commit_to_send_max"]),
    )


class FiguresSql:
    """Writes and reads the relays' windows of one outbox table, along the index of their ends."""

    def __init__(self, outbox_table_name: str) -> None:
        """Work on the figures table of the outbox table ``outbox_table_name``."""
        self.table = figures_table(outbox_table_name)

    def write(self, connection: Connection, figures: RelayFigures) -> None:
        """Insert one window, then delete the windows that ended past retention before it."""
        t = self.table
        # The columns are the record's fields; only the buckets are kept as text.
        row = {**asdict(figures), "commit_to_send": encode_buckets(figures.commit_to_send)}
        connection.execute(insert(t).values(row))
        connection.execute(delete(t).where(t.c.ended_at < figures.ended_at - RELAY_FIGURES_RETENTION))

    def read(self, connection: Connection, since: datetime, limit: int) -> list[RelayFigures]:
        """Up to ``limit`` windows that ended after ``since``, the latest end first."""
        t = self.table
        query = (
            select(t)
            .where(t.c.ended_at > since)
            .order_by(t.c.ended_at.desc(), t.c.id.desc())
            .limit(max(0, limit))
        )
        return [figures_row(row) for row in connection.execute(query).mappings()]
