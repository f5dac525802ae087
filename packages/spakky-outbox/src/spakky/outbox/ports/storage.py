"""Outbox storage port and its optional capabilities, both flavours.

The async ports are written once in `spakky.outbox.ports.async_storage`; the
sync ones in `spakky.outbox.ports.sync_storage` are generated from them
(``tools/unasync.py``). This module is where storages and tools import them
from: it holds every name of both, so a port added there is here too.
"""

from .async_storage import *  # noqa: F403
from .sync_storage import *  # noqa: F403
