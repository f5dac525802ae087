"""Fresh virtual environments for tests that install what a user would: wheels, not the workspace."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = (sys.executable, "-m", "uv")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the workspace's venv, import path and outbox settings."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
        and not k.startswith("SPAKKY_")
    }
    return {**env, **extra}


def build_wheel(package: str, out: Path) -> Path:
    """Build the wheel of a workspace package into ``out``; return its path."""
    subprocess.run(
        [*UV, "build", "--quiet", "--wheel", "--package", package, "--out-dir", str(out)],
        cwd=ROOT, check=True, timeout=300,
    )
    return next(out.glob(f"{package.replace('-', '_')}-*.whl"))


def fresh_venv(path: Path) -> Path:
    """Create an empty Python 3.13 venv at ``path``; return its interpreter."""
    subprocess.run([*UV, "venv", "--quiet", "--python", "3.13", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def install(python: Path, *requirements: str, find_links: Path | None = None) -> None:
    """Install into ``python``'s venv with uv: offline from the uv cache, or from the index when it lacks something."""
    command = [*UV, "pip", "install", "--quiet", "--python", str(python), *requirements]
    if find_links is not None:
        command += ["--find-links", str(find_links)]
    offline = subprocess.run([*command, "--offline"], capture_output=True, text=True, timeout=600)
    if offline.returncode != 0:
        subprocess.run(command, check=True, timeout=600)
