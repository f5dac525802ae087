"""Fresh virtual environments for tests that install what a user would: wheels, not the workspace."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = (sys.executable, "-m", "uv")
PYTHON = os.path.realpath(sys.executable)
"""The interpreter behind the workspace venv, for venvs made outside the workspace."""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the workspace's venv, import path and outbox settings."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT", "UV_OFFLINE")
        and not k.startswith("SPAKKY_")
    }
    return {**env, "UV_PYTHON": PYTHON, **extra}


def build_wheel(package: str, out: Path) -> Path:
    """Build the wheel of a workspace package into ``out``; return its path."""
    subprocess.run(
        [*UV, "build", "--quiet", "--wheel", "--package", package, "--out-dir", str(out)],
        cwd=ROOT, check=True, timeout=300,
    )
    return next(out.glob(f"{package.replace('-', '_')}-*.whl"))


def fresh_venv(path: Path) -> Path:
    """Create an empty venv of the workspace's Python at ``path``; return its interpreter."""
    subprocess.run([*UV, "venv", "--quiet", "--python", PYTHON, str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def uv_offline_first(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a uv command that fetches packages: offline from the uv cache, or from the index when the cache lacks one."""
    command = [*UV, *args]
    offline = subprocess.run(
        [*command, "--offline"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if offline.returncode != 0:
        subprocess.run(command, cwd=cwd, env=env, check=True, timeout=600)


def assert_core_is_workspace(venv: Path) -> None:
    """Fail unless the venv's ``spakky.outbox`` is this workspace's, file for file.

    uv caches wheels by name and version, so a stale build of the same version
    could otherwise be installed and tested in place of the working tree.
    """
    source = ROOT / "packages" / "spakky-outbox" / "src" / "spakky" / "outbox"
    installed = next(venv.glob("lib/python*/site-packages/spakky/outbox"))
    differ = [
        str(path.relative_to(source)) for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
        and (installed / path.relative_to(source)).read_bytes() != path.read_bytes()
    ]
    assert differ == [], f"installed spakky-outbox differs from the workspace in {differ}"


def pin_wheels(wheelhouse: Path) -> Path:
    """Write a constraints file pinning every wheel in ``wheelhouse`` to its version; return its path.

    Offline, a resolver missing one of our wheels' dependencies in the cache
    falls back to the published spakky-outbox 8.5.0 and succeeds; pinned, it
    fails instead and the install goes to the index.
    """
    pins = sorted(
        "{}=={}".format(*wheel.name.split("-")[:2]).replace("_", "-") for wheel in wheelhouse.glob("*.whl")
    )
    constraints = wheelhouse / "constraints.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in pins))
    return constraints


def install(python: Path, *requirements: str) -> None:
    """Install ``requirements`` into ``python``'s venv."""
    uv_offline_first("pip", "install", "--quiet", "--python", str(python), *requirements)
