"""Verification time per model, now and with an earlier verifier: the verifier issue's 1.5x bound.

    .venv/bin/python benchmarks/verification_time.py --baseline-commit ab1a8f2 \
        --out benchmarks/results/verification_time.json

Trains three Fashion-MNIST classifiers of the verifier zoo (an honest CNN of the
verifier's own family, which the reference test clears; an honest MLP, which it would
flag on its own, so the retrained copy decides; a vicious CNN, beta_R/beta_C = 3),
exports each with the legacy exporter at opset 17, and verifies each with
``verify_onnx`` (the built-in task's standard settings, 2 torch threads) in two ways:

* **fresh process**: one verification per new Python process, as ``edge-cloud verify``
  and the service's workers (a fresh process per job) run it, with the reference
  probe kept on disk by an earlier run where the code keeps it (``reference_cache``);
* **warm process**: after a first verification in the same process (the verifier's
  reference model is then already built, as in the zoo benchmark).

With ``--baseline-commit`` the same ONNX files are verified by that commit's code (a
git worktree, the same virtual environment) and the ratio is printed. Writes one JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.fileio import write_json

ROOT = Path(__file__).resolve().parents[1]
TASK = "fashion-mnist"
# (name, zoo family, beta_R/beta_C, seed)
MODELS = [
    ("cnn honest", "cnn", 0.0, 0),
    ("mlp honest", "mlp", 0.0, 0),
    ("cnn vicious", "cnn", 3.0, 1),
]


def export_models(folder: Path) -> None:
    """Train and export the three models (the current code's zoo)."""
    import torch

    from cloud_stub.verification.vicious import ViciousConfig, train_vicious
    from cloud_stub.verification.zoo import EXPORTS, FAMILIES, export

    for name, family, ratio, seed in MODELS:
        path = folder / f"{name.replace(' ', '_')}.onnx"
        if path.exists():
            continue
        torch.manual_seed(seed)
        config = ViciousConfig(beta_r=ratio, seed=seed, train_samples=12000, epochs=3)
        models = train_vicious(TASK, config, classifier=FAMILIES[family]())
        path.write_bytes(export(models.classifier.eval(), EXPORTS["legacy opset 17, dynamic batch"]))
        print(f"exported {name}", flush=True)


def time_verifications(paths: list[Path], repeats: int, *, warmup: bool, cache: Path) -> list[dict[str, Any]]:
    """Verify each file ``repeats`` times in this process (after one untimed verification with ``warmup``)."""
    import inspect

    import torch

    from cloud_stub.verification.verify import verify_onnx

    torch.set_num_threads(2)
    keeps = "reference_cache" in inspect.signature(verify_onnx).parameters  # an earlier verifier may not
    options: dict[str, Any] = {"reference_cache": cache} if keeps else {}
    if warmup:
        verify_onnx(paths[0].read_bytes(), task=TASK, **options)
    runs = []
    for path in paths:
        for _ in range(repeats):
            start = time.perf_counter()
            report = verify_onnx(path.read_bytes(), task=TASK, **options)
            runs.append(
                {
                    "model": path.stem,
                    "seconds": time.perf_counter() - start,
                    "verdict": report["verdict"],
                    "timings": report.get("timings", {}),
                }
            )
    return runs


def _child(paths: list[Path], repeats: int, code: Path, *, warmup: bool, cache: Path) -> list[dict[str, Any]]:
    """Run :func:`time_verifications` in a new process on ``code``'s packages."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(repeats)]
    command += ["--reference-cache", str(cache)]
    command += ["--warmup", *map(str, paths)] if warmup else list(map(str, paths))
    result = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(folder: Path, code: Path, repeats: int, cache: Path) -> dict[str, Any]:
    """Fresh-process and warm-process seconds per model on ``code`` (the warm run fills the reference cache)."""
    paths = sorted(folder.glob("*.onnx"))
    warm = _child(paths, repeats, code, warmup=True, cache=cache)
    fresh = [run for path in paths for run in _child([path], 1, code, warmup=False, cache=cache)]
    table = {}
    for path in paths:
        cold = [r for r in fresh if r["model"] == path.stem]
        hot = [r["seconds"] for r in warm if r["model"] == path.stem]
        table[path.stem] = {
            "fresh_seconds": cold[0]["seconds"],
            "warm_seconds_median": float(np.median(hot)),
            "verdict": cold[0]["verdict"],
            "fresh_timings": cold[0]["timings"],
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/verification_time.json")
    parser.add_argument("--baseline-commit", default=None, help="Also time this commit's verifier.")
    parser.add_argument("--models", type=Path, default=None, help="Folder of the exported models (kept).")
    parser.add_argument("--repeats", type=int, default=2, help="Warm verifications per model.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference-cache", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_verifications(args.paths, args.repeats, warmup=args.warmup, cache=args.reference_cache)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.models or Path(scratch) / "models"
        folder.mkdir(parents=True, exist_ok=True)
        export_models(folder)
        results = {"current": measure(folder, ROOT, args.repeats, Path(scratch) / "cache")}
        if args.baseline_commit:
            worktree = Path(scratch) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline_commit], cwd=ROOT,
                           check=True, capture_output=True)  # fmt: skip
            try:
                results["baseline"] = measure(folder, worktree, args.repeats, Path(scratch) / "baseline-cache")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    header = "| model | verdict | fresh process s | warm process s |"
    if "baseline" in results:
        header += " baseline fresh | baseline warm | ratio fresh | ratio warm |"
    print(header)
    for name, row in results["current"].items():
        line = f"| {name} | {row['verdict']} | {row['fresh_seconds']:.1f} | {row['warm_seconds_median']:.1f} |"
        if "baseline" in results:
            base = results["baseline"][name]
            line += (
                f" {base['fresh_seconds']:.1f} | {base['warm_seconds_median']:.1f} "
                f"| {row['fresh_seconds'] / base['fresh_seconds']:.2f}x "
                f"| {row['warm_seconds_median'] / base['warm_seconds_median']:.2f}x |"
            )
        print(line)
    payload = {
        "benchmark": "verification_time",
        "commit": commit.stdout.strip(),
        "baseline_commit": args.baseline_commit,
        "threads": 2,
        "results": results,
    }
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
