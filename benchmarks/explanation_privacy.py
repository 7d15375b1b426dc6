"""Explanations without identity: PredMI, ExpMI and GNIME on the kit head's attribution maps.

Run from the repository root (about 25 minutes on 2 cores for both methods):

    .venv/bin/python benchmarks/explanation_privacy.py --out benchmarks/results/explanation_privacy

For each attribution method (``edge_sdk.explanations``: Grad, Grad-CAM) of the default
kit's head, on public faces only (ORL s1-s20, 200 faces, ``--copies`` augmented copies
each) it trains:

- PredMI: an inversion network from the head's prediction vector alone;
- ExpMI: the same network from prediction and map (the map divided by its maximum);
- GNIME's noise generator, in the paper's game against an inversion network (``--lam``),
  its noise optionally rescaled to a mean square ``--gamma`` per map (the paper's Eq. 3);
- adaptive ExpMI attackers on what the device would release: GNIME maps, maps with
  Gaussian noise of GNIME's mean square distortion (RND), and maps averaged over a
  ``--coarsen`` x ``--coarsen`` grid (``edge-sdk explain --coarsen``). The device ships
  its defence, so an attacker applies it to its own public faces.

It then attacks the 80 private-test faces (20 people, chance 0.05) and scores the
reconstructions as the evaluation harness does: identity accuracy with SFace (gallery:
private-train) and with the identity classifier (trained on private-train), SSIM and
PSNR. Fidelity of released maps to clean ones: Spearman rank correlation (tied pixels at
their mean rank; a pair where either map is constant, such as an all-zero clean map, has
no rank correlation and is left out of the mean and counted), and the area
under the deletion curve (the head's confidence in its answer as the top-ranked pixels
are blacked out, 20 steps; smaller is a more faithful map). Writes
``explanation_privacy.json``, ``explanation_privacy.md`` and ``reconstructions_METHOD.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import load_orl
from edge_sdk.evaluation.explanation_attacks import (
    ExplanationData,
    ExplanationInverter,
    deletion_curve,
    explanation_data,
    rank_correlation,
    train_gnime,
    train_inverter,
)
from edge_sdk.evaluation.identity import train_identity_classifier
from edge_sdk.evaluation.oracles import ClassifierOracle, IdentityOracle, SFaceOracle, identity_accuracy_of
from edge_sdk.explanation_noise import ExplanationNoiseGenerator, coarsen_maps, normalise_maps, rescale_noise
from edge_sdk.figures import save_image_rows
from edge_sdk.kit import Kit, load_kit
from edge_sdk.metrics import psnr, ssim


def score(
    kit: Kit,
    inverter: ExplanationInverter,
    test: ExplanationData,
    maps: torch.Tensor,
    oracles: list[IdentityOracle],
    identity: torch.Tensor,
) -> tuple[dict[str, float], torch.Tensor]:
    with torch.no_grad():
        rebuilt = to_unit_range(inverter(maps, test.probabilities), kit.spec)
    originals = to_unit_range(test.images, kit.spec)
    result = {f"identity_{o.name}": identity_accuracy_of(o, rebuilt, identity) for o in oracles}
    result.update(ssim=float(ssim(rebuilt, originals).mean()), psnr=float(psnr(rebuilt, originals).mean()))
    return result, rebuilt


def run_method(
    kit: Kit, method: str, args: argparse.Namespace, oracles: list[IdentityOracle], out: Path
) -> dict[str, Any]:
    spec = kit.spec
    test_faces = load_orl("private-test", spec=spec)
    public = explanation_data(
        kit, load_orl("public", spec=spec).images, method=method, copies=args.copies, seed=args.seed
    )
    test = explanation_data(kit, test_faces.images, method=method)
    common = {"steps": args.steps, "seed": args.seed}

    noise: ExplanationNoiseGenerator = train_gnime(public, lam=args.lam, **common)

    def gnime(maps: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        noised = noise(maps, p)
        # Eq. 3: the provider's bound on the distortion, per map.
        return noised if args.gamma is None else rescale_noise(maps, noised, mse=args.gamma)

    with torch.no_grad():
        gnime_test = gnime(test.maps, test.probabilities)
        distortion = float((gnime_test - test.maps).pow(2).mean())

    def gaussian(maps: torch.Tensor, p: torch.Tensor, *, seed: int = args.seed) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return maps + distortion**0.5 * torch.randn(maps.shape, generator=g)

    random_test = gaussian(test.maps, test.probabilities, seed=args.seed + 1)

    def coarsened(maps: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return normalise_maps(coarsen_maps(maps, grid=args.coarsen))

    coarse_test = coarsened(test.maps, test.probabilities)
    attackers = {
        "PredMI (prediction alone)": (train_inverter(public, use_maps=False, **common), test.maps),
        "ExpMI, clean maps": (train_inverter(public, **common), test.maps),
        "ExpMI, random noise (RND, GNIME's distortion)": (
            train_inverter(public, released=gaussian, **common),
            random_test,
        ),
        "ExpMI, GNIME maps": (train_inverter(public, released=gnime, **common), gnime_test),
        f"ExpMI, coarsened maps ({args.coarsen}x{args.coarsen} grid)": (
            train_inverter(public, released=coarsened, **common),
            coarse_test,
        ),
    }
    rows, grid = {}, [("originals", to_unit_range(test.images[: args.grid], spec))]
    for name, (inverter, maps) in attackers.items():
        rows[name], rebuilt = score(kit, inverter, test, maps, oracles, test_faces.identity)
        grid.append((name.split(",")[0] if "PredMI" in name else name.replace("ExpMI, ", ""), rebuilt[: args.grid]))
        print(f"  [{method}] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
    save_image_rows(grid, out / f"reconstructions_{method}.png")

    target = test.probabilities.argmax(dim=1)
    fidelity = {}
    released = (("clean", test.maps), ("GNIME", gnime_test), ("RND", random_test), ("coarsened", coarse_test))
    for name, maps in released:
        curve = deletion_curve(kit, test.images, maps, target)
        ranks = rank_correlation(maps, test.maps)
        fidelity[name] = {
            "rank_correlation_with_clean": float(ranks.nanmean()),
            "maps_without_ranking": int(ranks.isnan().sum()),
            "deletion_auc": float(torch.trapezoid(curve, dx=1 / (curve.shape[1] - 1), dim=1).mean()),
        }
    clean_auc = fidelity["clean"]["deletion_auc"]
    for entry in fidelity.values():
        entry["deletion_auc_vs_clean"] = entry["deletion_auc"] / clean_auc - 1
    return {"attacks": rows, "fidelity": fidelity, "gnime_mse": distortion}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanation_privacy"))
    parser.add_argument("--methods", default="grad,grad-cam")
    parser.add_argument("--steps", type=int, default=1500, help="Adam steps of every network.")
    parser.add_argument("--copies", type=int, default=4, help="Explained copies of each public face (augmented).")
    parser.add_argument("--lam", type=float, default=1.0, help="GNIME's weight of the inverter's error (Eq. 2).")
    parser.add_argument(
        "--gamma", type=float, default=None, help="Eq. 3: GNIME's noise rescaled to this mean square per map."
    )
    parser.add_argument("--coarsen", type=int, default=8, help="Grid the coarsened maps are averaged over.")
    parser.add_argument("--grid", type=int, default=8, help="Faces in the reconstruction figure.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    kit = load_kit()
    train = load_orl("private-train", spec=kit.spec)
    oracles: list[IdentityOracle] = [
        SFaceOracle().fit_gallery(to_unit_range(train.images, kit.spec), train.identity),
        ClassifierOracle(train_identity_classifier(train, seed=args.seed), spec=kit.spec),
    ]
    results = {method: run_method(kit, method, args, oracles, args.out) for method in args.methods.split(",")}

    lines = [
        "| method | attack | identity, SFace | identity, classifier | SSIM | PSNR (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        for name, row in result["attacks"].items():
            lines.append(
                f"| {method} | {name} | {row['identity_sface']:.3f} | {row['identity_classifier']:.3f} | "
                f"{row['ssim']:.3f} | {row['psnr']:.2f} |"
            )
    lines += [
        "",
        "| method | released maps | rank correlation with clean | deletion AUC | vs clean |",
        "|---|---|---|---|---|",
    ]
    for method, result in results.items():
        for name, row in result["fidelity"].items():
            lines.append(
                f"| {method} | {name} | {row['rank_correlation_with_clean']:.3f} | {row['deletion_auc']:.3f} | "
                f"{row['deletion_auc_vs_clean']:+.1%} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    report = {
        "command": "python benchmarks/explanation_privacy.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - started),
        "kit": kit.manifest.name,
        "results": results,
    }
    (args.out / "explanation_privacy.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "explanation_privacy.md").write_text(table + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
