"""Which plugins the command loads: the outbox, the selected storage package, what they need.

Loading every installed plugin would start unrelated ones (a message broker,
another database) whose settings the command neither has nor needs; an
unconfigured one would stop it. So the command loads ``spakky-outbox``, the
storage package the application would select (the one named by
``SPAKKY_OUTBOX__STORAGE``, or the only one installed), and the plugins those
two distributions require.
"""

import re
from importlib.metadata import Distribution, distributions

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.registry import loaded_storage_names, select_storage_name

PLUGIN_GROUP = "spakky.plugins"
"""Entry point group of Spakky base plugins."""
STORAGE_GROUP = "spakky.contributions.spakky.outbox"
"""Entry point group a storage package contributes its storage through."""
CORE_DISTRIBUTION = "spakky-outbox"

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _required(distribution: Distribution) -> list[str]:
    """Names of the distributions ``distribution`` always requires (extras left out)."""
    names: list[str] = []
    for requirement in distribution.requires or []:
        _, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        if match := _REQUIREMENT_NAME.match(requirement):
            names.append(_normalized(match.group(1)))
    return names


def _plugin_names(distribution: Distribution) -> set[str]:
    return {ep.name for ep in distribution.entry_points if ep.group == PLUGIN_GROUP}


def _announced_storages(distribution: Distribution) -> list[str]:
    """The storage names a storage package announces, read by running its base plugin on a scratch app."""
    scratch = SpakkyApplication(ApplicationContext())
    for entry_point in distribution.entry_points:
        if entry_point.group == PLUGIN_GROUP:
            entry_point.load()(scratch)
    return loaded_storage_names(scratch)


def outbox_plugins() -> set[Plugin] | None:
    """The plugins the command needs; None when ``spakky-outbox`` is not installed as a distribution.

    Raises:
        UnknownOutboxStorageError: ``SPAKKY_OUTBOX__STORAGE`` names no installed storage.
        AmbiguousOutboxStorageError: Several storages are installed and none is named.
        InvalidOutboxConfigError: A ``SPAKKY_OUTBOX__*`` variable is invalid.
    """
    installed: dict[str, Distribution] = {}
    for distribution in distributions():
        installed.setdefault(_normalized(distribution.metadata["Name"]), distribution)
    if CORE_DISTRIBUTION not in installed:
        return None
    storages = {
        name: _announced_storages(distribution)
        for name, distribution in installed.items()
        if any(ep.group == STORAGE_GROUP for ep in distribution.entry_points)
        and _plugin_names(distribution)
    }
    selected = select_storage_name(
        OutboxConfig(), sorted({s for names in storages.values() for s in names})
    )
    wanted = [CORE_DISTRIBUTION, *(name for name, names in storages.items() if selected in names)]
    plugins: set[str] = set()
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen or name not in installed:
            continue
        seen.add(name)
        plugins |= _plugin_names(installed[name])
        wanted.extend(_required(installed[name]))
    return {Plugin(name=name) for name in plugins}
