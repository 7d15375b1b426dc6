"""Coarsened Grad-CAM maps over several grids: how much identity an adaptive inverter reads, and fidelity.

    .venv/bin/python benchmarks/explanation_coarsening.py --out benchmarks/results/explanation_coarsening.json

For each grid (``--grids``), the default kit head's maps of the 80 private-test faces
are averaged over a ``grid x grid`` grid (``edge_sdk.explanation_noise.coarsen_maps``,
then divided by their maximum) and an ExpMI inverter is trained on the public faces'
maps coarsened the same way (the attacker knows the device's defence; 1,500 Adam steps,
4 augmented copies of each public face). Prints and writes, per grid: the rank
correlation with the clean maps, the deletion AUC against the clean maps', and the
inverter's identity accuracy with SFace and the identity classifier (chance 0.05).
The full comparison with PredMI, GNIME and Gaussian noise is
``benchmarks/explanation_privacy.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import load_orl
from edge_sdk.evaluation.explanation_attacks import (
    deletion_curve,
    explanation_data,
    rank_correlation,
    train_inverter,
)
from edge_sdk.evaluation.identity import train_identity_classifier
from edge_sdk.evaluation.oracles import ClassifierOracle, IdentityOracle, SFaceOracle, identity_accuracy_of
from edge_sdk.explanation_noise import coarsen_maps, normalise_maps
from edge_sdk.fileio import write_json
from edge_sdk.kit import load_kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanation_coarsening.json"))
    parser.add_argument("--grids", default="16,12,10,9,8")
    parser.add_argument("--method", default="grad-cam")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    kit = load_kit()
    spec = kit.spec
    train = load_orl("private-train", spec=spec)
    oracles: list[IdentityOracle] = [
        SFaceOracle().fit_gallery(to_unit_range(train.images, spec), train.identity),
        ClassifierOracle(train_identity_classifier(train, seed=args.seed), spec=spec),
    ]
    faces = load_orl("private-test", spec=spec)
    public = explanation_data(kit, load_orl("public", spec=spec).images, method=args.method, copies=4, seed=args.seed)
    test = explanation_data(kit, faces.images, method=args.method)
    target = test.probabilities.argmax(dim=1)

    def deletion_auc(maps: torch.Tensor) -> float:
        curve = deletion_curve(kit, faces.images, maps, target)
        return float(torch.trapezoid(curve, dx=1 / (curve.shape[1] - 1), dim=1).mean())

    clean_auc = deletion_auc(test.maps)
    rows = []
    print("| grid | rank correlation | deletion AUC vs clean | identity, SFace | identity, classifier |")
    print("|---|---|---|---|---|")
    for grid in (int(g) for g in args.grids.split(",")):

        def coarsened(maps: torch.Tensor, _: torch.Tensor, grid: int = grid) -> torch.Tensor:
            return normalise_maps(coarsen_maps(maps, grid=grid))

        inverter = train_inverter(public, released=coarsened, steps=args.steps, seed=args.seed)
        released = coarsened(test.maps, test.probabilities)
        with torch.no_grad():
            rebuilt = to_unit_range(inverter(released, test.probabilities), spec)
        ranks = rank_correlation(released, test.maps)
        row = {
            "grid": grid,
            "rank_correlation_with_clean": float(ranks.nanmean()),
            "maps_without_ranking": int(ranks.isnan().sum()),
            "deletion_auc_vs_clean": deletion_auc(released) / clean_auc - 1,
            **{f"identity_{o.name}": identity_accuracy_of(o, rebuilt, faces.identity) for o in oracles},
        }
        rows.append(row)
        print(
            f"| {grid}x{grid} | {row['rank_correlation_with_clean']:.3f} | {row['deletion_auc_vs_clean']:+.1%} "
            f"| {row['identity_sface']:.3f} | {row['identity_classifier']:.3f} |",
            flush=True,
        )
    write_json(
        args.out,
        {
            "benchmark": "explanation_coarsening",
            "method": args.method,
            "steps": args.steps,
            "seed": args.seed,
            "clean_deletion_auc": clean_auc,
            "seconds": round(time.perf_counter() - started),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
