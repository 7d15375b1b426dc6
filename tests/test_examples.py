"""The examples run, in their quick mode, exactly as their READMEs say (so they never rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_stub.verification.tasks import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]


def run_example(relative: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / relative), "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout)
    return done.stdout


def test_readmes_name_the_commands_the_tests_run() -> None:
    for example in ("edge_app", "craft_folder", "cloud_operator"):
        readme = (ROOT / "examples" / example / "README.md").read_text()
        assert f".venv/bin/python examples/{example}/{example}.py --quick" in readme


@pytest.mark.slow
def test_edge_app() -> None:
    out = run_example("examples/edge_app/edge_app.py")
    assert "encoder: onnxruntime" in out and out.count("-> pose class") == 3
    assert "sent again: identical crafted feature = True" in out
    assert "refused upload handled" in out and "401" in out and "unreachable server handled" in out


@pytest.mark.slow
def test_craft_folder() -> None:
    out = run_example("examples/craft_folder/craft_folder.py")
    assert "CLI and library give the same features: True" in out
    assert "resumed: 1 batch(es) reused, 8 images, same features as the uninterrupted run = True" in out


@pytest.mark.slow
def test_cloud_operator() -> None:
    out = run_example("examples/cloud_operator/cloud_operator.py")
    if FASHION_MNIST_DIR.is_dir():
        assert "honest.onnx -> honest" in out and "vicious.onnx -> vicious" in out
    else:
        pytest.skip("Fashion-MNIST not installed: only the head-training part ran")
    assert "trained head" in out and "collected 60 crafted features" in out
