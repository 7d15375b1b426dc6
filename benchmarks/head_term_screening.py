"""Screening the head's term of the intrapersonal utility: kit-head agreement and new heads, no attacks.

    .venv/bin/python benchmarks/head_term_screening.py --out benchmarks/results/head_term_screening.json

All 400 ORL faces are crafted as :func:`edge_sdk.evaluation.evaluate` crafts them for
the frontier (the 80 private-test faces, then the other 320, in batches of 32, seed 0)
with the intrapersonal preset and each head term below; for each release it reports
the kit head's agreement with its answers on the raw features and the retained share
of new heads on the tasks the kit never saw (:func:`development_utility`, 50 bootstrap
resamples: the intervals are not reported, the means are those of the frontier's
method). It chooses which settings the frontier then attacks (minutes per setting
instead of half an hour); its privacy is not measured here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from edge_sdk.crafting.config import CrafterConfig
from edge_sdk.data.orl import FaceSet, load_orl
from edge_sdk.evaluation.development import development_tasks, development_utility, summarise
from edge_sdk.evaluation.harness import craft_batches
from edge_sdk.fileio import write_json
from edge_sdk.kit import load_kit

# (head_loss, head_weight, head_margin): no head term, the KL, and the hinge at three weights.
SETTINGS: list[tuple[str, float, float]] = [
    ("kl", 0.0, 0.0),
    ("kl", 0.3, 0.0),
    ("hinge", 1.0, 1.0),
    ("hinge", 1.0, 3.0),
    ("hinge", 0.3, 0.2),
    ("hinge", 0.1, 0.0),
]


def name_of(loss: str, weight: float, margin: float) -> str:
    """A setting's row name."""
    if weight == 0:
        return "no head term"
    return f"{loss} x{weight:g}" + (f", margin {margin:g}" if loss == "hinge" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/head_term_screening.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    assert kit.head is not None
    test = load_orl("private-test", spec=kit.spec)
    everyone = FaceSet.joined(test, load_orl("private-train", spec=kit.spec), load_orl("public", spec=kit.spec))
    images, identity = everyone.images, everyone.identity
    raw = kit.encode(images)
    with torch.no_grad():
        answers = kit.head(raw).argmax(1)
    tasks = development_tasks(everyone)
    rows: list[dict[str, Any]] = []
    for loss, weight, margin in SETTINGS:
        name = name_of(loss, weight, margin)
        config = CrafterConfig.intrapersonal(seed=0, head_loss=loss, head_weight=weight, head_margin=margin)
        start = time.perf_counter()
        # As the harness crafts them: the attacked faces, then the rest, so the batches are the frontier's.
        first, _, _ = craft_batches(kit, config, test.images, batch_size=32)
        second, _, _ = craft_batches(kit, config, images[len(test.images) :], batch_size=32)
        release = torch.cat([first, second])
        seconds = time.perf_counter() - start
        with torch.no_grad():
            agreement = float((kit.head(release).argmax(1) == answers).float().mean())
        scores = development_utility({name: release}, raw, tasks, identity, bootstrap=args.bootstrap)
        summary = summarise(scores, name)
        per_task = {f"{s.task} {s.family}": s.retained for s in scores if s.release == name and not s.seen_by_kit}
        rows.append(
            {
                "setting": name,
                "head_loss": loss,
                "head_weight": weight,
                "head_margin": margin,
                "agreement": agreement,
                **summary,
                "retained_per_task": per_task,
                "crafting_seconds": seconds,
            }
        )
        print(
            f"{name:28s} agreement {agreement:.3f}  unseen mean {summary['mean_retained_unseen']:.2f} "
            f"(min {summary['min_retained_unseen']:.2f})  {seconds:.0f} s",
            flush=True,
        )
    write_json(args.out, {"faces": len(images), "bootstrap": args.bootstrap, "rows": rows})
    print("\n| head term | kit-head agreement | unseen retained: mean (min) |\n|---|---|---|")
    for row in rows:
        print(
            f"| {row['setting']} | {row['agreement']:.3f} | "
            f"{row['mean_retained_unseen']:.2f} ({row['min_retained_unseen']:.2f}) |"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
