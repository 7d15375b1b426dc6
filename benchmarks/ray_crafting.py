"""Folder crafting on Ray Data against the single process: images per second, and identical output.

Run from the repository root (about 10 minutes on 2 cores):

    .venv/bin/python benchmarks/ray_crafting.py --out benchmarks/results/ray_crafting.json

It copies ``--images`` ORL pictures (92x112 PGM, faces found and aligned as for any
photo) into a temporary folder and crafts them with the bundled default kit and the
default configuration, as a user would, each run a fresh ``edge-sdk craft`` process
(start-up, kit loading and, for Ray, the local cluster's start included):

- the single process at ``--threads`` threads (what one machine does today) and at 1;
- ``edge-sdk craft --ray`` with 1 .. ``--max-actors`` actors of 1 thread each, on a
  local Ray instance.

It reports wall seconds and images per second per run, the throughput of each Ray run
against the single process at ``--threads`` threads, and whether the Ray output equals
the single process's at 1 thread bit for bit (floating-point sums depend on the thread
count, so that is the like-for-like comparison).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.data.orl import orl_root
from edge_sdk.fileio import read_features

CLI = [str(Path(sys.executable).parent / "edge-sdk")]  # the console script of this environment


def make_folder(folder: Path, images: int) -> None:
    """``images`` ORL pictures, people s1, s2 ... in turn, 10 each."""
    folder.mkdir(parents=True)
    for n in range(images):
        subject, shot = n // 10 + 1, n % 10 + 1
        shutil.copyfile(orl_root() / f"s{subject}" / f"{shot}.pgm", folder / f"s{subject:02d}_{shot:02d}.pgm")


def run(args: list[str]) -> float:
    """Seconds one ``edge-sdk craft`` process takes."""
    start = time.perf_counter()
    subprocess.run([*CLI, *args, "-q"], check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_crafting.json"))
    parser.add_argument("--images", type=int, default=256, help="ORL pictures crafted (at most 400).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="Threads of the single-process baseline.")
    parser.add_argument("--max-actors", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ray_crafting_"))
    try:
        folder = work / "photos"
        make_folder(folder, min(args.images, 400))
        common = ["--batch-size", str(args.batch_size)]
        runs: list[dict[str, Any]] = []
        outputs: dict[str, Path] = {}
        plan: list[tuple[str, list[str], Path]] = [
            (f"single process, {args.threads} threads", ["--threads", str(args.threads)], work / "single.npz"),
            ("single process, 1 thread", ["--threads", "1"], work / "single_1.npz"),
        ]
        for actors in range(1, args.max_actors + 1):
            plan.append(
                (f"Ray Data, {actors} actor(s) x 1 thread", ["--ray", "--actors", str(actors)], work / f"ray_{actors}")
            )
        for name, extra, out in plan:
            seconds = run(["craft", str(folder), "--out", str(out), *common, *extra])
            images = len(read_features(out).files)
            runs.append({"run": name, "seconds": round(seconds, 1), "images": images, "images_per_s": images / seconds})
            outputs[name] = out
            print(f"{name:34s} {seconds:8.1f} s  {images / seconds:6.3f} img/s", flush=True)

        baseline = runs[0]["images_per_s"]
        reference = read_features(outputs["single process, 1 thread"])
        for row in runs:
            row["throughput_vs_single_process"] = row["images_per_s"] / baseline
            if row["run"].startswith("Ray"):
                released = read_features(outputs[row["run"]])
                row["identical_to_single_process_1_thread"] = bool(
                    released.files == reference.files and np.array_equal(released.features, reference.features)
                )

        print()
        print("| run | seconds | images/s | vs single process | identical output |")
        print("|---|---|---|---|---|")
        for row in runs:
            same = {True: "yes", False: "NO"}.get(row.get("identical_to_single_process_1_thread"), "")  # type: ignore[arg-type]
            print(
                f"| {row['run']} | {row['seconds']} | {row['images_per_s']:.3f} | "
                f"{row['throughput_vs_single_process']:.2f}x | {same} |"
            )
        report = {
            "command": "python benchmarks/ray_crafting.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
            "date": time.strftime("%Y-%m-%d"),
            "images": runs[0]["images"],
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
