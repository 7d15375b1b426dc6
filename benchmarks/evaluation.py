"""Privacy-utility trade-off of the default kit: every attack on every defence, worst case per defence.

    .venv/bin/python benchmarks/evaluation.py --out benchmarks/results/evaluation

Runs :func:`edge_sdk.evaluation.evaluate` (the ``edge-sdk evaluate`` command without
``--quick``) on the ORL private-test faces with the default crafting configuration,
a beta sweep (``--betas``), Gaussian noise at the same distortion and Crafter-z, and
writes ``report.json``, ``report.md`` and the figures into ``--out``. Prints the
worst case per defence (highest identity accuracy over all attacks, per oracle)
with the utility, then the A3 table. ``--preset`` and ``--latent-noise`` choose the
crafting configuration evaluated, e.g. ``--betas "" --latent-noise 0.5 --no-baselines``
for the default at a partial Crafter-z start alone.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from edge_sdk.crafting.config import PRESETS
from edge_sdk.evaluation.harness import EvaluationConfig, evaluate
from edge_sdk.evaluation.report import write_report
from edge_sdk.kit import load_kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/evaluation"))
    parser.add_argument("--betas", default="0.05", help="comma-separated betas besides the configured one")
    parser.add_argument("--images", type=int, default=None, help="private-test faces (default: all 80)")
    parser.add_argument("--whitebox-steps", type=int, default=600)
    parser.add_argument("--a2-gan-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="default",
        help="crafting configuration evaluated (as `edge-sdk craft --preset`)",
    )
    parser.add_argument(
        "--latent-noise",
        type=float,
        default=None,
        help="override the preset's Crafter-z start (as `edge-sdk craft --latent-noise`)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip the Gaussian-noise and Crafter-z baselines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    betas = tuple(float(b) for b in args.betas.split(",") if b.strip())
    config = replace(
        EvaluationConfig(),
        images=args.images,
        betas=betas,
        whitebox_steps=args.whitebox_steps,
        a2_gan_steps=args.a2_gan_steps,
        seed=args.seed,
        baselines=not args.no_baselines,
    )
    overrides = {} if args.latent_noise is None else {"latent_noise": args.latent_noise}
    crafter_config = PRESETS[args.preset](seed=args.seed, **overrides)
    kit = load_kit()
    start = time.perf_counter()
    report = evaluate(
        kit,
        crafter_config=crafter_config,
        config=config,
        log=lambda line: print(f"[{time.perf_counter() - start:7.0f}s] {line}", flush=True),
    )
    paths = write_report(report, args.out, spec=kit.spec)
    print(
        f"\n{report.faces['attacked']} private-test faces, chance {report.chance:.2f}; "
        f"{args.threads} threads, {report.seconds:.0f} s"
    )
    width = max(len(d.defence) for d in report.defences) + 2
    print(f"{'defence':<{width}}{'worst SFace':>12}{'worst clf':>10}{'pose':>7}{'raw pose':>9}{'agree':>7}{'dist':>7}")
    for d in report.defences:
        u, w = d.utility, d.worst_case
        print(
            f"{d.defence:<{width}}{w['sface']['identity']:>12.3f}{w['classifier']['identity']:>10.3f}"
            f"{u['pose_accuracy']:>7.3f}{u['pose_accuracy_raw']:>9.3f}{u['pose_agreement']:>7.3f}"
            f"{u['relative_distortion']:>7.3f}"
        )
    print("\nA3 (configured Crafter):")
    for row in report.a3:
        print(
            f"  {row['mode']:<28} {row['attack']:<36} SFace {row['identity_sface']:.3f} "
            f"classifier {row['identity_classifier']:.3f} spread {row['release_spread']:.4f}"
        )
    print(f"\nwrote {paths['json']} and {paths['markdown']}")


if __name__ == "__main__":
    main()
