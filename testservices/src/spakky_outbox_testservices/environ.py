"""Settings for one test: ``SPAKKY_*`` variables set for a block, the whole environment restored after it."""

import os
from collections.abc import Generator, Mapping
from contextlib import contextmanager


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Generator[None]:
    """Set ``values`` in ``os.environ`` for the block; afterwards restore it as it was (what the block set too)."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
