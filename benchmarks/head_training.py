"""Development scenario: can the cloud train a new pose head on released features?

    .venv/bin/python benchmarks/head_training.py --out benchmarks/results/head_training.json

Releases the public and private-train ORL faces (320, with pose labels) with a
crafting preset, trains fresh heads of the kit's architecture on them
(:func:`cloud_stub.heads.fit_head`, what the cloud stub's training jobs run), and
tests them on the released private-test faces (80 unseen people), next to heads
trained and tested on raw features. Several seeds, because 80 test faces make one
head's accuracy move by 1.25 points per face.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cloud_stub.heads import fit_head
from edge_sdk.crafting.config import PRESETS
from edge_sdk.data.orl import load_orl
from edge_sdk.evaluation.harness import craft_batches
from edge_sdk.kit import load_kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/head_training.json"))
    parser.add_argument("--presets", default="default,feature", help="comma-separated crafting presets")
    parser.add_argument(
        "--latent-noises", default="", help="comma-separated latent_noise values also released with the default preset"
    )
    parser.add_argument("--seeds", type=int, default=5, help="head-training seeds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    sets = {name: load_orl(name, spec=kit.spec) for name in ("public", "private-train", "private-test")}
    train_labels = torch.cat([sets["public"].pose, sets["private-train"].pose]).numpy()
    test_labels = sets["private-test"].pose
    with torch.no_grad():
        raw = {name: kit.encode(faces.images) for name, faces in sets.items()}

    def accuracies(train: torch.Tensor, test: torch.Tensor) -> list[float]:
        out = []
        for seed in range(args.seeds):
            head = fit_head(train.numpy(), train_labels, arch=kit.architecture, seed=seed).head
            with torch.no_grad():
                out.append(float((head(test).argmax(1) == test_labels).float().mean()))
        return out

    raw_train = torch.cat([raw["public"], raw["private-train"]])
    rows: list[dict[str, Any]] = [
        {"features": "raw", "seconds_crafting": 0.0, "test_accuracy": accuracies(raw_train, raw["private-test"])}
    ]
    configs = {preset: PRESETS[preset](seed=0) for preset in (p.strip() for p in args.presets.split(",")) if preset}
    for noise in (float(m) for m in args.latent_noises.split(",") if m.strip()):
        configs[f"default, latent noise {noise:g}"] = PRESETS["default"](seed=0, latent_noise=noise)
    for preset, config in configs.items():
        start = time.perf_counter()
        released = {
            name: craft_batches(kit, config, faces.images, batch_size=args.batch_size)[0]
            for name, faces in sets.items()
        }
        seconds = time.perf_counter() - start
        train = torch.cat([released["public"], released["private-train"]])
        rows.append(
            {
                "features": preset,
                "seconds_crafting": seconds,
                "test_accuracy": accuracies(train, released["private-test"]),
            }
        )
        print(f"[{preset}] released {sum(len(f) for f in sets.values())} faces in {seconds:.0f} s", flush=True)
    for row in rows:
        row["mean"] = statistics.mean(row["test_accuracy"])
        row["stdev"] = statistics.stdev(row["test_accuracy"]) if len(row["test_accuracy"]) > 1 else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"seeds": args.seeds, "train_faces": len(train_labels), "test_faces": len(test_labels), "rows": rows},
            indent=2,
        )
        + "\n"
    )
    print(f"\nnew pose heads trained on {len(train_labels)} released faces, tested on {len(test_labels)} unseen people")
    width = max(len(row["features"]) for row in rows) + 2
    print(f"{'features':<{width}}{'mean acc':>10}{'stdev':>8}  per seed")
    for row in rows:
        per_seed = " ".join(f"{a:.3f}" for a in row["test_accuracy"])
        print(f"{row['features']:<{width}}{row['mean']:>10.3f}{row['stdev']:>8.3f}  {per_seed}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
