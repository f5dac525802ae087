"""Selection of the one active outbox storage among the loaded storage packages.

A storage package's base plugin announces itself with `announce_storage`; its
``spakky.contributions.spakky.outbox`` contribution (which Spakky runs after
every base plugin) calls `register_storage`. By then every loaded storage has
announced itself, so the choice is made over the complete set: one loaded is
used; several need ``SPAKKY_OUTBOX__STORAGE``. Only the chosen storage's Pods
are added, and the storage ports are bound to them, so they win over any other
candidate such as the storage ``spakky-sqlalchemy`` contributes for itself.
"""

import logging
from typing import override
from weakref import WeakKeyDictionary

from spakky.core.application.application import SpakkyApplication
from spakky.core.pod.annotations.pod import Pod
from spakky.core.pod.interfaces.application_context import IApplicationContext
from spakky.core.pod.interfaces.aware.application_context_aware import (
    IApplicationContextAware,
)
from spakky.core.pod.interfaces.post_processor import IPostProcessor
from spakky.data.persistency.transaction import (
    AbstractAsyncTransaction,
    AbstractTransaction,
)
from spakky.outbox.common.config import SPAKKY_OUTBOX_CONFIG_ENV_PREFIX, OutboxConfig
from spakky.outbox.error import (
    AmbiguousOutboxStorageError,
    OutboxStorageNotFoundError,
    UnknownOutboxStorageError,
)
from spakky.outbox.ports.inbox import IAsyncInboxStorage, IInboxStorage
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage

logger = logging.getLogger(__name__)

_ANNOUNCED: WeakKeyDictionary[SpakkyApplication, set[str]] = WeakKeyDictionary()


def announce_storage(app: SpakkyApplication, name: str) -> None:
    """Record that the storage package ``name`` is loaded into ``app``."""
    _ANNOUNCED.setdefault(app, set()).add(name)


def loaded_storage_names(app: SpakkyApplication) -> list[str]:
    """Return the names of the storage packages loaded into ``app``, sorted."""
    return sorted(_ANNOUNCED.get(app, set()))


def select_storage_name(config: OutboxConfig, loaded: list[str]) -> str | None:
    """Return the storage to use among ``loaded``, or None when none is loaded.

    Raises:
        UnknownOutboxStorageError: ``SPAKKY_OUTBOX__STORAGE`` names a storage
            that is not loaded.
        AmbiguousOutboxStorageError: Several are loaded and none is named.
    """
    choices = ", ".join(loaded) or "none"
    if config.storage is not None:
        if config.storage not in loaded:
            raise UnknownOutboxStorageError(
                f"{config.storage!r}; installed storages: {choices}"
            )
        return config.storage
    if len(loaded) > 1:
        raise AmbiguousOutboxStorageError(
            f"installed: {choices}. Set {SPAKKY_OUTBOX_CONFIG_ENV_PREFIX}STORAGE "
            "to one of them"
        )
    return loaded[0] if loaded else None


def register_storage(
    app: SpakkyApplication,
    name: str,
    storage: type[IOutboxStorage] | None,
    async_storage: type[IAsyncOutboxStorage] | None,
    transactions: tuple[type[AbstractTransaction], type[AbstractAsyncTransaction]] | None = None,
    inboxes: tuple[type[IInboxStorage] | None, type[IAsyncInboxStorage] | None] = (None, None),
) -> bool:
    """Add a storage package's Pods when it is the selected storage.

    Args:
        app: The application being built.
        name: The name the package announced with `announce_storage`.
        storage: The synchronous storage Pod class (None: async only; the
            synchronous bus then refuses ``send`` with our own error).
        async_storage: The asynchronous storage Pod class (None: sync only).
        transactions: For a storage that brings its own Spakky transactions
            (sync, async): they are added and bound, so ``@Transactional()``
            opens the transaction ``save`` joins, even beside another data
            plugin's transactions.
        inboxes: The package's inbox storages (sync, async), added and bound
            with the outbox storage; None for a flavour it lacks.

    Returns:
        True when the storage was selected and registered.
    """
    announce_storage(app, name)
    selected = select_storage_name(OutboxConfig(), loaded_storage_names(app))
    if selected != name:
        logger.debug("Outbox storage %r loaded but not selected (%r)", name, selected)
        return False
    transaction, async_transaction = (None, None) if transactions is None else transactions
    inbox, async_inbox = inboxes
    bindings: tuple[tuple[type, type | None], ...] = (
        (IOutboxStorage, storage),
        (IAsyncOutboxStorage, async_storage),
        (IInboxStorage, inbox),
        (IAsyncInboxStorage, async_inbox),
        (AbstractTransaction, transaction),
        (AbstractAsyncTransaction, async_transaction),
    )
    for port, pod in bindings:
        if pod is not None:
            app.add(pod)
            app.container.bind_to_type(port, pod)
    logger.info("Outbox storage %r selected", name)
    return True


@Pod()
class OutboxStorageGuard(IPostProcessor, IApplicationContextAware):
    """Fails startup early, naming what to install, when no storage is registered."""

    @override
    def set_application_context(self, application_context: IApplicationContext) -> None:
        """Check, once every Pod is registered, that some storage exists."""
        if not (
            application_context.contains(IAsyncOutboxStorage)
            or application_context.contains(IOutboxStorage)
        ):
            raise OutboxStorageNotFoundError()

    @override
    def post_process(self, pod: object) -> object:
        """Leave every Pod unchanged."""
        return pod
