"""``spakky-outbox new-backend``: the skeleton installs, registers and passes the suite out of the box."""

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from spakky.outbox.cli.main import main as outbox_command
from spakky.outbox.scaffold.generate import (
    BackendDirectoryExistsError,
    InvalidBackendNameError,
    generate,
)

from tests.examples.venvs import (
    ROOT,
    UV,
    assert_core_is_workspace,
    clean_env,
    uv_offline_first,
)

PYRIGHT = ROOT / ".venv" / "bin" / "pyright"
RUFF = ROOT / ".venv" / "bin" / "ruff"
SUMMARY = re.compile(
    r"^acme_db: BASE - (\d+) passed, extended 2/\d+ \(sync_api, partition_ordering\)$", re.M
)


def test_scaffold_command_expect_package_with_entry_points_and_suite(tmp_path: Path) -> None:
    """``spakky-outbox new-backend acme_db`` writes the package with both entry points, settings, transactions and the two-file run."""
    out = io.StringIO()
    assert outbox_command(["new-backend", "acme_db", "--into", str(tmp_path)], out) == 0
    root = tmp_path / "spakky-outbox-acme-db"
    assert f"created {root}" in out.getvalue()
    assert "uv run pytest" in out.getvalue()
    module = root / "src" / "spakky" / "plugins" / "outbox_acme_db"
    assert sorted(p.name for p in module.iterdir()) == [
        "__init__.py", "config.py", "contribution.py", "database.py", "main.py",
        "storage.py", "transaction.py",
    ]
    assert sorted(p.name for p in (root / "tests").iterdir()) == [
        "conftest.py", "test_conformance.py", "test_registration.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'spakky-outbox-acme-db = "spakky.plugins.outbox_acme_db.main:initialize"' in pyproject
    assert 'spakky-outbox-acme-db = "spakky.plugins.outbox_acme_db.contribution:initialize"' in pyproject
    assert '"spakky.contributions.spakky.outbox"' in pyproject
    assert "transactions=(AcmeDbTransaction, AsyncAcmeDbTransaction)" in (module / "contribution.py").read_text()
    config = (module / "config.py").read_text()
    assert 'ENV_PREFIX: str = "SPAKKY_OUTBOX_ACME_DB__"' in config
    assert "def __init__(self) -> None:" in config
    assert "$" not in "".join(p.read_text() for p in root.rglob("*.py"))


@pytest.mark.parametrize("name", ["Acme", "acme-db", "1acme", "acme__db", "acme_", ""])
def test_scaffold_bad_name_expect_error_naming_rule_and_nothing_written(
    tmp_path: Path, name: str
) -> None:
    """A name that cannot name a package, a module and a setting is refused, saying what is allowed."""
    with pytest.raises(InvalidBackendNameError) as caught:
        generate(name, tmp_path)
    assert "lowercase letters and digits" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_scaffold_existing_directory_expect_error_and_nothing_overwritten(tmp_path: Path) -> None:
    """An existing package directory is never overwritten."""
    root = generate("acme", tmp_path)
    (root / "pyproject.toml").write_text("mine")
    with pytest.raises(BackendDirectoryExistsError) as caught:
        generate("acme", tmp_path)
    assert str(root) in str(caught.value)
    assert (root / "pyproject.toml").read_text() == "mine"


def test_scaffold_package_expect_ruff_and_strict_pyright_clean(tmp_path: Path) -> None:
    """The generated code passes the workspace's ruff rules and pyright in strict mode, as ``make lint`` needs."""
    root = generate("acme_db", tmp_path)
    ruff = subprocess.run(
        [str(RUFF), "check", "--config", str(ROOT / "pyproject.toml"), str(root)],
        capture_output=True, text=True, timeout=120,
    )
    assert ruff.returncode == 0, ruff.stdout
    (root / "pyrightconfig.json").write_text(json.dumps({
        "typeCheckingMode": "strict", "pythonVersion": "3.13", "extraPaths": ["src"],
        "reportMissingTypeStubs": False, "reportUnknownMemberType": False,
        "reportPrivateUsage": False,
    }))
    pyright = subprocess.run(
        [str(PYRIGHT), "--pythonpath", str(ROOT / ".venv" / "bin" / "python"), "-p", str(root)],
        capture_output=True, text=True, timeout=300,
    )
    assert pyright.returncode == 0, pyright.stdout[-3000:]
    assert "0 errors" in pyright.stdout


def test_scaffold_package_fresh_venv_expect_registered_and_base_level(
    core_wheel: Path, tmp_path: Path
) -> None:
    """Outside the workspace, ``uv run pytest`` in the new package installs it, registers it and reaches BASE."""
    root = generate("acme_db", tmp_path)
    env = clean_env(UV_FIND_LINKS=str(core_wheel.parent))
    uv_offline_first("sync", "--quiet", cwd=root, env=env)  # fill the venv; the cache usually has all
    assert_core_is_workspace(root / ".venv")
    result = subprocess.run(
        [*UV, "run", "pytest", "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True,
        timeout=600, env={**env, "UV_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout[-2000:]
    assert int(summary.group(1)) >= 25
    assert re.search(r"test_registration\.py \.\.", result.stdout), result.stdout[-2000:]
