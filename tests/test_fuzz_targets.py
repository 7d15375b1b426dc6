"""Coverage-guided fuzzing of what strangers send the cloud stub (fuzz/, atheris).

Every input a fuzzer ever crashed on is kept under ``fuzz/crashes/<target>/`` and must
now be refused with one of the target's typed errors; a bounded fuzzing run of each
target from its committed corpus must find no new crash.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("atheris", reason="atheris is in the 'dev' extra")

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ("payloads", "onnx_upload", "datasets")
# libFuzzer options of the bounded run: inputs, seconds, and the largest input (bytes).
# A regression smoke over the committed corpus; the campaigns that found the crashes ran millions
# of inputs (benchmarks/RESULTS.md, "Fuzzing").
BOUNDED_RUN = {"payloads": (100_000, 60, 4096), "onnx_upload": (10_000, 60, 2048), "datasets": (100_000, 60, 8192)}


def _target(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _crashes() -> list[tuple[str, Path]]:
    return [(name, path) for name in TARGETS for path in sorted((FUZZ / "crashes" / name).glob("*"))]


@pytest.mark.parametrize(("target", "path"), _crashes(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_input_a_fuzzer_crashed_on_is_now_refused_with_a_typed_error(target: str, path: Path) -> None:
    _target(target).test_one_input(path.read_bytes())  # raises (fails) on anything but the expected errors


def test_the_corpus_seeds_are_accepted_or_refused_with_a_typed_error() -> None:
    for name in TARGETS:
        module = _target(name)
        seeds = sorted((FUZZ / "corpus" / name).glob("*"))
        assert seeds, name
        for seed in seeds:
            module.test_one_input(seed.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_a_bounded_fuzzing_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    runs, seconds, max_len = BOUNDED_RUN[target]
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus" / target, corpus)
    command = [
        sys.executable,
        str(FUZZ / f"{target}.py"),
        str(corpus),
        f"-runs={runs}",
        f"-max_total_time={seconds}",
        f"-max_len={max_len}",
        "-seed=1",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={tmp_path}/",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, f"{crashes}\n{result.stderr[-3000:]}"
