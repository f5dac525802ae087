"""The published shape: wheels, extras and entry points, installed into a fresh venv."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("spakky-outbox", "spakky-outbox-sqlalchemy", "spakky-outbox-redis", "spakky-outbox-mongodb")

PROBE = """
import importlib, importlib.metadata as md, json
groups = {g: sorted(f"{e.name}={e.value}" for e in md.entry_points(group=g))
          for g in ("spakky.plugins", "spakky.contributions.spakky.outbox", "console_scripts")}
mods = {}
for name in ("spakky.outbox.main", "spakky.outbox.testing", "spakky.outbox.testing.memory",
             "spakky.plugins.outbox_sqlalchemy.storage", "greenlet", "asyncpg", "psycopg"):
    try:
        importlib.import_module(name); mods[name] = True
    except Exception as error:
        mods[name] = repr(error)
import sys
print(json.dumps({"groups": groups, "mods": mods, "pytest": "pytest" in sys.modules}))
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a wheel of every workspace package."""
    out = tmp_path_factory.mktemp("wheels")
    uv = shutil.which("uv") or f"{sys.executable} -m uv"
    for package in PACKAGES:
        subprocess.run(
            f"{uv} build --quiet --wheel --package {package} --out-dir {out}",
            shell=True, cwd=ROOT, check=True, timeout=300,
        )
    return out


def test_packaging_postgres_extra_expect_everything_needed_installed(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """``pip install "spakky-outbox[postgres]"`` brings the storage, its drivers and greenlet, and registers the plugins."""
    uv = shutil.which("uv") or f"{sys.executable} -m uv"
    venv = tmp_path / "venv"
    subprocess.run(f"{uv} venv --quiet --python 3.13 {venv}", shell=True, check=True, timeout=120)
    subprocess.run(
        f'{uv} pip install --quiet --python {venv}/bin/python --find-links {wheelhouse} '
        f'"spakky-outbox[postgres]"',
        shell=True, check=True, timeout=600,
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout)
    assert all(value is True for value in report["mods"].values()), report["mods"]
    assert report["pytest"] is False
    groups = report["groups"]
    assert "spakky-outbox=spakky.outbox.main:initialize" in groups["spakky.plugins"]
    assert (
        "spakky-outbox-sqlalchemy=spakky.plugins.outbox_sqlalchemy.main:initialize"
        in groups["spakky.plugins"]
    )
    assert (
        "spakky-outbox-sqlalchemy=spakky.plugins.outbox_sqlalchemy.contribution:initialize"
        in groups["spakky.contributions.spakky.outbox"]
    )
    assert "spakky-outbox=spakky.outbox.cli.main:main" in groups["console_scripts"]
    assert not (venv / "lib" / "python3.13" / "site-packages" / "spakky" / "__init__.py").exists()


MONGODB_PROBE = """
import importlib.metadata as md, json
from pymongo import AsyncMongoClient
from spakky.plugins.outbox_mongodb.storage import AsyncMongoOutboxStorage
groups = {g: sorted(f"{e.name}={e.value}" for e in md.entry_points(group=g))
          for g in ("spakky.plugins", "spakky.contributions.spakky.outbox")}
print(json.dumps({"groups": groups, "pymongo": md.version("pymongo")}))
"""


def test_packaging_mongodb_extra_expect_plugin_and_pymongo_async(wheelhouse: Path, tmp_path: Path) -> None:
    """``pip install "spakky-outbox[mongodb]"`` brings PyMongo's async API and registers both entry points."""
    uv = shutil.which("uv") or f"{sys.executable} -m uv"
    venv = tmp_path / "venv"
    subprocess.run(f"{uv} venv --quiet --python 3.13 {venv}", shell=True, check=True, timeout=120)
    subprocess.run(
        f'{uv} pip install --quiet --python {venv}/bin/python --find-links {wheelhouse} "spakky-outbox[mongodb]"',
        shell=True, check=True, timeout=600,
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", MONGODB_PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout)
    assert tuple(int(part) for part in report["pymongo"].split(".")[:2]) >= (4, 13)
    assert "spakky-outbox-mongodb=spakky.plugins.outbox_mongodb.main:initialize" in report["groups"]["spakky.plugins"]
    assert (
        "spakky-outbox-mongodb=spakky.plugins.outbox_mongodb.contribution:initialize"
        in report["groups"]["spakky.contributions.spakky.outbox"]
    )
