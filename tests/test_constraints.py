"""The constraints file pins what the suite passed with, inside the package's ranges, and installs use it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "edge-feature-sdk"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _project_requirements() -> list[Requirement]:
    """Base dependencies and those of every extra, the project's own extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [req for req in map(Requirement, lines) if canonicalize_name(req.name) != PROJECT]


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins()
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} not in {requirement}"
        )


def test_the_file_says_when_and_how_it_was_made() -> None:
    text = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^# Refreshed \d{4}-\d{2}-\d{2} on Python 3\.\d+", text, re.M)
    assert "python3 scripts/refresh_constraints.py" in text
    assert PROJECT not in _pins() and all("+" not in version for version in _pins().values())


def test_ci_and_the_readme_install_through_it() -> None:
    install = re.compile(r"pip install[^\n]*-c constraints\.txt[^\n]*-e \"\.\[dev\]\"")
    assert install.search((ROOT / ".ci" / "run").read_text())
    assert install.search((ROOT / "README.md").read_text())


def test_refresh_script_pins_public_versions_without_the_project() -> None:
    spec = importlib.util.spec_from_file_location("refresh_constraints", ROOT / "scripts" / "refresh_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    freeze = "Torch==2.13.0+cpu\n-e /work/main\nedge_feature_sdk==0.1.0\nPyYAML==6.0.2\nfoo @ file:///x.whl\n"
    assert module.pinned_lines(freeze) == ["pyyaml==6.0.2", "torch==2.13.0"]
