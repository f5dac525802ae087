"""An app that brings its own async-only storage and transactions, with the core alone (issue 10.5)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from spakky.core.application.plugin import Plugin
from spakky.outbox.bus.outbox_event_bus import OutboxEventBus
from spakky.outbox.error import OutboxStorageFlavourMissingError

from examples.custom_backend.app import NoteTaken, build, run
from tests.examples.venvs import (
    ROOT,
    assert_core_is_workspace,
    clean_env,
    fresh_venv,
    install,
)

CORE_PLUGINS = {
    Plugin(name=n)
    for n in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")
}
EXPECTED = {
    "business": ["n-1", "n-3"],
    "stored": 2,
    "delivered": [["NoteTaken", "n-1"], ["NoteTaken", "n-3"]],
}
"""Three notes taken, the second rolled back: two stored, two relayed, in order."""


def test_app_own_async_storage_expect_committed_events_relayed() -> None:
    """The example app (its own IAsyncOutboxStorage Pod and transactions) starts and relays what it committed."""
    assert run(CORE_PLUGINS, timeout=30) == EXPECTED


def test_app_own_async_storage_sync_send_expect_flavour_error() -> None:
    """The sync bus, built without a storage, refuses with our error naming the event and the way out."""
    app = build(CORE_PLUGINS).start()
    try:
        bus = app.application_context.get(OutboxEventBus)
        with pytest.raises(OutboxStorageFlavourMissingError) as caught:
            bus.send(NoteTaken(note_id="n-sync"))
        assert "NoteTaken" in str(caught.value) and "IAsyncEventPublisher" in str(caught.value)
    finally:
        app.stop()


def test_app_own_async_storage_core_wheel_alone_expect_committed_events_relayed(
    core_wheel: Path, tmp_path: Path
) -> None:
    """Installed from the core's wheel alone (no storage package), the example app starts and relays."""
    python = fresh_venv(tmp_path / "venv")
    install(python, str(core_wheel))
    assert_core_is_workspace(tmp_path / "venv")
    plugins = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps([e.name for e in m.entry_points(group='spakky.plugins')]))"],
        capture_output=True, text=True, check=True, timeout=120, env=clean_env(),
    )
    installed = json.loads(plugins.stdout)
    assert "spakky-outbox" in installed
    assert not [p for p in installed if p.startswith("spakky-outbox-")], installed
    app_dir = tmp_path / "app" / "examples"
    shutil.copytree(
        ROOT / "examples" / "custom_backend", app_dir / "custom_backend",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "examples" / "__init__.py", app_dir / "__init__.py")
    result = subprocess.run(
        [str(python), "-m", "examples.custom_backend.app"],
        cwd=app_dir.parent, capture_output=True, text=True, timeout=120, env=clean_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == EXPECTED
