"""Per-frame latency of crafting at batch 1, as an app crafts camera frames one after another.

Run from the repository root (about 5 minutes on 2 cores):

    .venv/bin/python benchmarks/frame_latency.py --out benchmarks/results/frame_latency.json

Frames are the ORL private-test pictures, read one at a time as the edge-app example
does (``examples/edge_app``): each is decoded, its face found and aligned
(``face_crops``, OpenCV's YuNet), then crafted alone (``Crafter.craft`` at batch 1, the
encoder included) with the bundled default kit on ``--threads`` torch threads, without
the crafter's privacy measurement (``measure_privacy=False``: the release is the same,
the two attacker inversions that measure epsilon-PII are skipped, as an app would).
One warm-up frame per preset is not counted. Per preset it reports p50 and p95 of the
milliseconds per frame for face finding, for crafting, and for both.

The ``paper`` preset (500 feature steps, 150 Neumann terms on the exact Hessian, a
600-step inversion) takes minutes per frame; it runs ``--paper-steps`` feature steps on
``--paper-frames`` frames and adds the steps not run at the measured mean step time.

Privacy is the evaluation harness's worst identity accuracy over every attack, both
oracles, as ``benchmarks/frontier.py`` measured it on releases crafted in batches of
32 (read from the ``--frontier`` runs: the frontier, and the intrapersonal preset's run
with A3 on it); releases crafted at batch 1 were not attacked by the
harness here, and the ``paper`` preset was never run through it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk.crafting import PRESETS, Crafter, CrafterConfig
from edge_sdk.data.images import face_crops, read_picture
from edge_sdk.data.orl import orl_keys, orl_root
from edge_sdk.kit import Kit, load_kit

# Preset -> the release of the frontier runs (``--frontier``) made with the same configuration.
FRONTIER_ROWS = {
    "default": "crafter-z (head utility, latent noise 1) beta=1 (configured)",
    "feature": "crafter, feature space (preset feature, beta=0.2)",
    "answer-only": "answer-only (kit head's class)",
    "intrapersonal": "crafter-z (intrapersonal utility, latent noise 1) beta=1 (configured)",
}
FRONTIER_RUNS = (
    Path("benchmarks/results/frontier/frontier.json"),
    Path("benchmarks/results/frontier_intrapersonal_hinge/frontier.json"),
)


def frames(count: int) -> list[Path]:
    """The first ``count`` ORL private-test pictures (80 in all)."""
    return [orl_root() / f"s{s}" / f"{i}.pgm" for s, i in orl_keys("private-test")[:count]]


def time_frames(kit: Kit, config: CrafterConfig, paths: list[Path]) -> dict[str, Any]:
    """Milliseconds per frame (face finding, crafting) after one warm-up frame, and the feature step times."""
    crafter = Crafter(kit, config, measure_privacy=False)
    find_ms, craft_ms, step_seconds = [], [], []
    for n, path in enumerate(paths):
        start = time.perf_counter()
        frame = face_crops(read_picture(path), kit.spec)[0][None]  # the largest face, aligned: (1, C, S, S)
        found = time.perf_counter()
        result = crafter.craft(images=frame)
        done = time.perf_counter()
        if n:  # the first frame warms up torch and onnxruntime
            find_ms.append(1000 * (found - start))
            craft_ms.append(1000 * (done - found))
            step_seconds.append(result.diagnostics["step_seconds"])
    return {"find_ms": find_ms, "craft_ms": craft_ms, "step_s": step_seconds}


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/frame_latency.json"))
    parser.add_argument("--frames", type=int, default=21, help="Frames per preset, the warm-up one included.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paper-frames", type=int, default=3, help="Frames of the paper preset, warm-up included.")
    parser.add_argument("--paper-steps", type=int, default=2, help="Feature steps run for the paper preset.")
    parser.add_argument(
        "--frontier",
        type=Path,
        nargs="+",
        default=list(FRONTIER_RUNS),
        help="frontier.json files to read privacy from.",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    frontier: dict[str, Any] = {}
    for run in args.frontier:
        for row in json.loads(run.read_text())["rows"]:
            earlier = frontier.setdefault(row["release"], row)
            figures = ("worst_identity_sface", "worst_identity_classifier")
            if any(earlier.get(k) != row.get(k) for k in figures):
                raise SystemExit(f"{run}: release {row['release']!r} has other figures in an earlier --frontier file")

    rows = []
    for preset, make in PRESETS.items():
        config: CrafterConfig = make()
        measured, full_steps = config, None
        if preset == "paper":
            measured, full_steps = replace(config, steps=args.paper_steps), config.steps
        timing = time_frames(kit, measured, frames(args.paper_frames if preset == "paper" else args.frames))
        craft_ms = timing["craft_ms"]
        if full_steps is not None:
            # Every feature step costs about the same: add the steps not run, frame by frame.
            craft_ms = [
                ms + 1000 * (full_steps - measured.steps) * s for ms, s in zip(craft_ms, timing["step_s"], strict=True)
            ]
        total = [a + b for a, b in zip(timing["find_ms"], craft_ms, strict=True)]
        privacy = frontier.get(FRONTIER_ROWS.get(preset, ""), {})
        rows.append(
            {
                "preset": preset,
                "frames": len(total),
                "find_face_ms": percentiles(timing["find_ms"]),
                "craft_ms": percentiles(craft_ms),
                "total_ms": percentiles(total),
                "extrapolated_from_steps": measured.steps if full_steps is not None else None,
                "worst_identity_sface_batch_32": privacy.get("worst_identity_sface"),
                "worst_identity_classifier_batch_32": privacy.get("worst_identity_classifier"),
                "config": asdict(config),
            }
        )
        r = rows[-1]
        print(
            f"{preset:12s} total p50 {r['total_ms']['p50']:9.1f} ms  p95 {r['total_ms']['p95']:9.1f} ms  "
            f"(find face p95 {r['find_face_ms']['p95']:.1f}, craft p95 {r['craft_ms']['p95']:.1f})",
            flush=True,
        )

    def figure(value: float | None) -> str:
        return "not measured" if value is None else f"{value:.3f}"

    print()
    print(
        "| preset | frames | total p50 ms | total p95 ms | craft p95 ms | find face p95 ms "
        "| worst identity SFace / classifier (batch 32) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        note = f" (extrapolated from {r['extrapolated_from_steps']} steps)" if r["extrapolated_from_steps"] else ""
        print(
            f"| {r['preset']}{note} | {r['frames']} | {r['total_ms']['p50']:.0f} | {r['total_ms']['p95']:.0f} | "
            f"{r['craft_ms']['p95']:.0f} | {r['find_face_ms']['p95']:.1f} | "
            f"{figure(r['worst_identity_sface_batch_32'])} / {figure(r['worst_identity_classifier_batch_32'])} |"
        )
    report = {
        "command": "python benchmarks/frame_latency.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "kit": kit.manifest.name,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
