"""Selection of the one active outbox storage among the installed ones.

Storage packages announce themselves in the ``spakky.outbox.storages``
entry-point group (name = the value ``SPAKKY_OUTBOX__STORAGE`` takes) and
register their Pods from their ``spakky.contributions.spakky.outbox``
contribution through `register_storage`. Only the selected storage's Pods are
added, and the storage ports are bound to them, so they win over any other
candidate such as the storage ``spakky-sqlalchemy`` contributes for itself.
"""

import logging
from importlib.metadata import entry_points

from spakky.core.application.application import SpakkyApplication
from spakky.outbox.common.config import SPAKKY_OUTBOX_CONFIG_ENV_PREFIX, OutboxConfig
from spakky.outbox.error import AmbiguousOutboxStorageError, UnknownOutboxStorageError
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage

STORAGE_ENTRY_POINT_GROUP = "spakky.outbox.storages"
"""Entry-point group in which storage packages announce their selectable name."""

logger = logging.getLogger(__name__)


def installed_storage_names() -> list[str]:
    """Return the names of every installed storage package, sorted."""
    return sorted({ep.name for ep in entry_points(group=STORAGE_ENTRY_POINT_GROUP)})


def select_storage_name(config: OutboxConfig) -> str | None:
    """Return the storage this process must use, or None when none is installed.

    Raises:
        UnknownOutboxStorageError: ``SPAKKY_OUTBOX__STORAGE`` names a storage
            that is not installed.
        AmbiguousOutboxStorageError: Several are installed and none is named.
    """
    installed = installed_storage_names()
    choices = ", ".join(installed) or "none"
    if config.storage is not None:
        if config.storage not in installed:
            raise UnknownOutboxStorageError(
                f"{config.storage!r}; installed storages: {choices}"
            )
        return config.storage
    if len(installed) > 1:
        raise AmbiguousOutboxStorageError(
            f"installed: {choices}. Set {SPAKKY_OUTBOX_CONFIG_ENV_PREFIX}STORAGE "
            "to one of them"
        )
    return installed[0] if installed else None


def register_storage(
    app: SpakkyApplication,
    name: str,
    storage: type[IOutboxStorage],
    async_storage: type[IAsyncOutboxStorage],
) -> bool:
    """Add a storage package's Pods when it is the selected storage.

    Args:
        app: The application being built.
        name: The storage's name in the ``spakky.outbox.storages`` group.
        storage: The synchronous storage Pod class.
        async_storage: The asynchronous storage Pod class.

    Returns:
        True when the storage was selected and registered.
    """
    selected = select_storage_name(OutboxConfig())
    if selected != name:
        logger.debug("Outbox storage %r installed but not selected (%r)", name, selected)
        return False
    app.add(storage)
    app.add(async_storage)
    app.container.bind_to_type(IOutboxStorage, storage)
    app.container.bind_to_type(IAsyncOutboxStorage, async_storage)
    logger.info("Outbox storage %r selected", name)
    return True
