"""The published shape: each package's wheel installed alone, bare and with each extra.

Every workspace package (``packages/*``) is built into a wheel; then, for the
package alone and for each of its extras, a fresh venv on this interpreter's
Python version gets ``uv pip install "<package>[<extra>]==<version>"`` (wheels
from the wheelhouse, dependencies from the index). In that venv a probe checks
that the package's module imports, that every entry point it declares is
discovered and (for Spakky's groups and console scripts) loads, that exactly
the distributions the extra promises are there, that no other workspace
package came along, that nothing imported pytest, and that ``spakky`` stays a
namespace package. ``SPAKKY_OUTBOX_WHEELHOUSE`` points at wheels built
beforehand (CI's wheel job runs ``uv build --all-packages``); unset, the
wheels are built here.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE_ENV = "SPAKKY_OUTBOX_WHEELHOUSE"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
LOADED_GROUPS = ("spakky.", "console_scripts")
"""Entry-point groups whose entries must load; others (pytest11) need only be found."""

PROBE = """
import importlib, importlib.metadata as md, json, os, sys, sysconfig
args = json.loads(sys.argv[1])
report = {"import": None, "entry_points": {}}
try:
    importlib.import_module(args["module"])
except Exception as error:
    report["import"] = repr(error)
for group, name, load in args["entry_points"]:
    found = [e for e in md.entry_points(group=group) if e.name == name]
    try:
        if not found:
            report["entry_points"][f"{group}:{name}"] = "not discovered"
        elif load:
            found[0].load()
    except Exception as error:
        report["entry_points"][f"{group}:{name}"] = repr(error)
installed = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
report["missing"] = sorted(set(args["expected"]) - installed)
report["workspace"] = sorted(installed & set(args["workspace"]))
report["pytest"] = "pytest" in sys.modules
purelib = sysconfig.get_paths()["purelib"]
report["namespace"] = not os.path.exists(os.path.join(purelib, "spakky", "__init__.py"))
print(json.dumps(report))
"""


@dataclass(frozen=True)
class Package:
    """One workspace package, from its ``pyproject.toml``."""

    name: str
    version: str
    module: str
    dependencies: tuple[str, ...]
    extras: dict[str, tuple[str, ...]]
    entry_points: tuple[tuple[str, str], ...]
    """(group, name) of every entry point and script the package declares."""


def _read_package(pyproject: Path) -> Package:
    data: dict[str, Any] = tomllib.loads(pyproject.read_text())
    project = data["project"]
    entry_points = [
        (group, name)
        for group, entries in project.get("entry-points", {}).items()
        for name in entries
    ]
    entry_points += [("console_scripts", name) for name in project.get("scripts", {})]
    return Package(
        name=canonicalize_name(project["name"]),
        version=project["version"],
        module=data["tool"]["uv"]["build-backend"]["module-name"],
        dependencies=tuple(project.get("dependencies", ())),
        extras={
            extra: tuple(requirements)
            for extra, requirements in project.get("optional-dependencies", {}).items()
        },
        entry_points=tuple(entry_points),
    )


WORKSPACE = {
    package.name: package
    for package in map(_read_package, sorted(ROOT.glob("packages/*/pyproject.toml")))
}


def _expected(name: str, extras: frozenset[str], seen: set[str]) -> set[str]:
    """Distributions ``name[extras]`` must bring, workspace packages followed through."""
    package = WORKSPACE[name]
    requirements = list(package.dependencies)
    for extra in extras:
        requirements += package.extras[extra]
    found = {name}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(
            {"extra": ""}
        ):
            continue
        dependency = canonicalize_name(requirement.name)
        key = f"{dependency}{sorted(requirement.extras)}"
        if dependency in WORKSPACE and key not in seen:
            seen.add(key)
            found |= _expected(dependency, frozenset(requirement.extras), seen)
        else:
            found.add(dependency)
    return found


@dataclass(frozen=True)
class Install:
    """A package alone, or with one extra."""

    package: Package
    extra: str | None

    @property
    def requirement(self) -> str:
        extra = f"[{self.extra}]" if self.extra else ""
        return f"{self.package.name}{extra}=={self.package.version}"


INSTALLS = [
    Install(package, extra)
    for package in WORKSPACE.values()
    for extra in (None, *package.extras)
]


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every workspace package: prebuilt, or built here."""
    prebuilt = os.environ.get(WHEELHOUSE_ENV)
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            *_uv(),
            "build",
            "--quiet",
            "--all-packages",
            "--wheel",
            "--out-dir",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    return out


@pytest.mark.parametrize("install", INSTALLS, ids=lambda i: i.requirement)
def test_packaging_wheel_installed_alone_expect_imports_entry_points_and_extra(
    install: Install, wheelhouse: Path, tmp_path: Path
) -> None:
    """A package's wheel, alone with one extra in a fresh venv, imports, registers its entry points and brings what the extra promises."""
    package = install.package
    wheels = sorted(wheelhouse.glob(f"{package.name.replace('-', '_')}-*.whl"))
    assert wheels, f"no wheel of {package.name} in {wheelhouse}"
    venv = tmp_path / "venv"
    subprocess.run(
        [*_uv(), "venv", "--quiet", "--python", PYTHON, str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *_uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--find-links",
            str(wheelhouse),
            install.requirement,
        ],
        check=True,
        timeout=600,
    )
    expected = _expected(
        package.name, frozenset([install.extra] if install.extra else []), set()
    )
    args = {
        "module": package.module,
        "entry_points": [
            (group, name, group.startswith(LOADED_GROUPS))
            for group, name in package.entry_points
        ],
        "expected": sorted(expected),
        "workspace": sorted(WORKSPACE),
    }
    result = subprocess.run(
        [str(python), "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    assert report["import"] is None, report["import"]
    assert report["entry_points"] == {}, report["entry_points"]
    assert report["missing"] == [], f"{install.requirement} did not install these"
    assert report["workspace"] == sorted(expected & set(WORKSPACE))
    assert report["pytest"] is False, (
        "importing the package or its plugins imported pytest"
    )
    assert report["namespace"] is True, "something installed spakky/__init__.py"
    if ("console_scripts", "spakky-outbox") in package.entry_points:
        help_text = subprocess.run(
            [str(venv / "bin" / "spakky-outbox"), "--help"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        assert "usage: spakky-outbox" in help_text
