"""Coarsened Grad-CAM maps over several grids: how much identity an adaptive inverter reads, and fidelity.

    .venv/bin/python benchmarks/explanation_coarsening.py --out benchmarks/results/explanation_coarsening.json
    .venv/bin/python benchmarks/explanation_coarsening.py --grids 9 --ranked 9 --lowpass 9 \
        --attacker-seeds 0,1 --out benchmarks/results/explanation_coarsening_variants.json

For each grid (``--grids``), the default kit head's maps of the 80 private-test faces
are averaged over a ``grid x grid`` grid (``edge_sdk.explanation_noise.coarsen_maps``,
then divided by their maximum) and an ExpMI inverter is trained on the public faces'
maps coarsened the same way (the attacker knows the device's defence; 1,500 Adam steps,
4 augmented copies of each public face). Two other coarse releases of as many numbers
can be screened beside it: ``--ranked`` replaces each map's cell averages by their
ranks before upsampling (no magnitudes, the same order), ``--lowpass`` keeps the
``k x k`` lowest frequencies of each map's 2-D DCT-II (clipped at zero). Prints and
writes, per release and attacker seed (``--attacker-seeds``: the inverter's
initialisation, batches and the public faces' augmentation; the identity oracles
stay those of ``--seed``): the rank correlation with the clean maps, the deletion AUC
against the clean maps', and the inverter's identity accuracy with SFace and the
identity classifier (chance 0.05). The full comparison with PredMI, GNIME and Gaussian
noise is ``benchmarks/explanation_privacy.py``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import load_orl
from edge_sdk.evaluation.explanation_attacks import (
    average_ranks,
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

Release = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(size, size)``: ``D @ x`` transforms the columns of ``x``."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    i = torch.arange(size, dtype=torch.float64)[None]
    matrix = torch.cos(math.pi * (i + 0.5) * k / size) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


def cells(grid: int) -> Release:
    """Maps averaged over a ``grid x grid`` grid (what ``edge-sdk explain --coarsen`` releases)."""
    return lambda maps, _: normalise_maps(coarsen_maps(maps, grid=grid))


def ranked_cells(grid: int) -> Release:
    """The cell averages replaced by their ranks in ``[0, 1]`` (ties share their mean rank), then upsampled."""

    def release(maps: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        means = F.adaptive_avg_pool2d(maps[:, None], grid)
        ranks = (average_ranks(means.flatten(1)).float() - 1) / (grid * grid - 1)
        upsampled = F.interpolate(ranks.view_as(means), size=maps.shape[-2:], mode="bilinear", align_corners=False)
        return normalise_maps(upsampled[:, 0])

    return release


def lowpass(frequencies: int) -> Release:
    """The ``frequencies x frequencies`` lowest DCT-II frequencies of each map kept, clipped at zero."""

    def release(maps: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        rows, cols = dct_matrix(maps.shape[-2]), dct_matrix(maps.shape[-1])
        coefficients = rows @ maps @ cols.T
        kept = torch.zeros_like(coefficients)
        kept[:, :frequencies, :frequencies] = coefficients[:, :frequencies, :frequencies]
        return normalise_maps((rows.T @ kept @ cols).clamp_min(0))

    return release


def numbers(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanation_coarsening.json"))
    parser.add_argument("--grids", type=numbers, default=[16, 12, 10, 9, 8], help="Cell grids, comma-separated.")
    parser.add_argument("--ranked", type=numbers, default=[], help="Grids whose cell averages are released as ranks.")
    parser.add_argument("--lowpass", type=numbers, default=[], help="Squares of lowest DCT frequencies kept.")
    parser.add_argument("--attacker-seeds", type=numbers, default=None, help="Default: --seed.")
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
    public_faces = load_orl("public", spec=spec).images
    test = explanation_data(kit, faces.images, method=args.method)
    target = test.probabilities.argmax(dim=1)

    def deletion_auc(maps: torch.Tensor) -> float:
        curve = deletion_curve(kit, faces.images, maps, target)
        return float(torch.trapezoid(curve, dx=1 / (curve.shape[1] - 1), dim=1).mean())

    releases: dict[str, tuple[dict[str, object], Release]] = {
        **{f"{g}x{g} cells": ({"grid": g}, cells(g)) for g in args.grids},
        **{f"{g}x{g} cells, ranks": ({"grid": g, "ranked": True}, ranked_cells(g)) for g in args.ranked},
        **{f"{k}x{k} DCT frequencies": ({"dct_frequencies": k}, lowpass(k)) for k in args.lowpass},
    }
    clean_auc = deletion_auc(test.maps)
    public = {
        seed: explanation_data(kit, public_faces, method=args.method, copies=4, seed=seed)
        for seed in args.attacker_seeds or [args.seed]
    }
    rows = []
    print("| release | attacker seed | rank correlation | deletion AUC vs clean | identity: SFace | classifier |")
    print("|---|---|---|---|---|---|")
    for name, (settings, released_as) in releases.items():
        released = released_as(test.maps, test.probabilities)
        ranks = rank_correlation(released, test.maps)
        fidelity = {
            "rank_correlation_with_clean": float(ranks.nanmean()),
            "maps_without_ranking": int(ranks.isnan().sum()),
            "deletion_auc_vs_clean": deletion_auc(released) / clean_auc - 1,
        }
        for seed, public_maps in public.items():
            inverter = train_inverter(public_maps, released=released_as, steps=args.steps, seed=seed)
            with torch.no_grad():
                rebuilt = to_unit_range(inverter(released, test.probabilities), spec)
            row = {
                "release": name,
                **settings,
                "attacker_seed": seed,
                **fidelity,
                **{f"identity_{o.name}": identity_accuracy_of(o, rebuilt, faces.identity) for o in oracles},
            }
            rows.append(row)
            print(
                f"| {name} | {seed} | {row['rank_correlation_with_clean']:.3f} | {row['deletion_auc_vs_clean']:+.1%} "
                f"| {row['identity_sface']:.3f} | {row['identity_classifier']:.3f} |",
                flush=True,
            )
    write_json(
        args.out,
        {
            "benchmark": "explanation_coarsening",
            "method": args.method,
            "steps": args.steps,
            "oracle_seed": args.seed,
            "clean_deletion_auc": clean_auc,
            "seconds": round(time.perf_counter() - started),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
