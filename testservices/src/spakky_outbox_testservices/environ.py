"""Settings for one test: ``SPAKKY_*`` variables set for a block, the whole environment restored after it."""

import os
from collections.abc import Generator, Mapping
from contextlib import contextmanager


def settings_of(prefix: str, values: Mapping[str, str]) -> dict[str, str]:
    """``values`` as variables of a settings prefix: ``{"URL": u}`` of ``SPAKKY_OUTBOX_REDIS`` is ``SPAKKY_OUTBOX_REDIS__URL=u``."""
    return {f"{prefix}__{name}": value for name, value in values.items()}


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
