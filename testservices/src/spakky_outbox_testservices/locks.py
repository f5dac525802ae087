"""Machine-wide locks for tests that share one named resource of a shared server."""

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def shared_queue(name: str) -> Iterator[None]:
    """Hold the machine-wide lock on the shared RabbitMQ's queue ``name``.

    Spakky's RabbitMQ plugins name a queue after its event class, so tests of one
    event share a queue on the shared broker: two consumers of it would split its
    messages and a purge by one would drop the other's (across xdist workers and
    concurrent runs too). Each such test holds this lock while it uses the queue.
    """
    path = Path(tempfile.gettempdir()) / f"spakky-outbox-queue-{name}.lock"
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
