"""The privacy-utility frontier: every release the SDK offers, attacked every way and used for new tasks.

    .venv/bin/python benchmarks/frontier.py --out benchmarks/results/frontier
    .venv/bin/python benchmarks/frontier.py --configured intrapersonal-no-head \
        --only intrapersonal-beta-0.5,answer-only --no-baselines --out DIR   # part of it

Each release (raw features, the default Crafter-z with head utility, the same from
partial and no fresh noise, the paper's Crafter-z with feature utility, the
feature-space Crafter, Gaussian noise at the configured release's distortion,
answer-only, Crafter-z with the intrapersonal utility) is made of all 400 ORL faces
and judged twice by :func:`edge_sdk.evaluation.evaluate`:

* privacy: the worst identity accuracy over every attack (white-box, amortized,
  decoder, hybrid, A1 decoder and generator, A2; A3), with both
  identity oracles, on the 80 private-test faces of 20 people (chance 0.05); A3 runs
  on the configured release (``--configured``, the default preset unless given);
* utility: new heads (linear and MLP) trained on the releases of some people and
  tested on those of others (identity-disjoint 5-fold cross-validation over the 40
  people) for the kit's pose task and four tasks it never saw; the retained share
  ``(released - chance) / (raw - chance)`` with 95% bootstrap intervals over people.

Writes ``frontier.json``, ``frontier.md`` and ``frontier.png`` (and the evaluation
report the figures came from) into ``--out`` and applies the default's rule: the
highest mean retained unseen-task share among the releases whose worst case is at
most 10% identity with both oracles.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from edge_sdk.crafting.config import PRESETS, CrafterConfig
from edge_sdk.evaluation.harness import EvaluationConfig, EvaluationReport, evaluate
from edge_sdk.evaluation.report import development_tables, write_report
from edge_sdk.figures import pyplot, save_figure
from edge_sdk.fileio import atomic_write, write_json
from edge_sdk.kit import load_kit

PRIVACY_BOUND = 0.10  # the default's rule: worst case over all attacks at most this, both oracles


def releases(seed: int) -> dict[str, tuple[str, CrafterConfig]]:
    """The releases besides raw, the configured one, Gaussian noise and the paper's Crafter-z (built into evaluate).

    Keyed by the name ``--only`` and ``--configured`` take.
    """
    return {
        "default": ("crafter-z (head utility, latent noise 1)", CrafterConfig(seed=seed)),
        "latent-noise-0.5": ("crafter-z (head utility, latent noise 0.5)", CrafterConfig(seed=seed, latent_noise=0.5)),
        "latent-noise-0": ("crafter-z (head utility, latent noise 0)", CrafterConfig(seed=seed, latent_noise=0.0)),
        "feature": ("crafter, feature space (preset feature, beta=0.2)", PRESETS["feature"](seed=seed)),
        "answer-only": ("answer-only (kit head's class)", PRESETS["answer-only"](seed=seed)),
        "intrapersonal": (
            "crafter-z, intrapersonal utility and the head's answer (preset intrapersonal: beta 1, hinge x0.1)",
            PRESETS["intrapersonal"](seed=seed),
        ),
        # Without the head's term, as the preset was before the hinge (recorded in RESULTS.md).
        "intrapersonal-no-head": (
            "crafter-z, intrapersonal utility (beta 1, no head term)",
            PRESETS["intrapersonal"](seed=seed, head_weight=0.0, head_loss="kl"),
        ),
        "intrapersonal-beta-0.5": (
            "crafter-z, intrapersonal utility (beta 0.5, no head term)",
            PRESETS["intrapersonal"](seed=seed, beta=0.5, head_weight=0.0, head_loss="kl"),
        ),
        "intrapersonal-rank-8": (
            "crafter-z, intrapersonal utility (first 8 directions, no head term)",
            PRESETS["intrapersonal"](seed=seed, intrapersonal_rank=8, head_weight=0.0, head_loss="kl"),
        ),
        "intrapersonal-rank-4": (
            "crafter-z, intrapersonal utility (first 4 directions, no head term)",
            PRESETS["intrapersonal"](seed=seed, intrapersonal_rank=4, head_weight=0.0, head_loss="kl"),
        ),
    }


def frontier_rows(report: EvaluationReport) -> list[dict[str, Any]]:
    """One row per release: worst case per oracle (A3 in the configured one's), retained shares, agreement."""
    a3 = {
        oracle: max((row[f"identity_{oracle}"] for row in report.a3), default=0.0) for oracle in ("sface", "classifier")
    }
    rows = []
    for d in report.defences:
        worst = {oracle: d.worst_case[oracle]["identity"] for oracle in ("sface", "classifier")}
        if "(configured)" in d.defence:
            worst = {oracle: max(worst[oracle], a3[oracle]) for oracle in worst}
        per_task: dict[str, dict[str, Any]] = {}
        for score in report.development:
            if score["release"] == d.defence:
                per_task.setdefault(score["task"], {})[score["family"]] = score
        rows.append(
            {
                "release": d.defence,
                "kind": d.kind,
                "worst_identity_sface": worst["sface"],
                "worst_identity_classifier": worst["classifier"],
                "kit_head_agreement": d.utility["pose_agreement"],
                "relative_distortion": d.utility["relative_distortion"],
                "mean_retained_unseen": d.development.get("mean_retained_unseen", math.nan),
                "min_retained_unseen": d.development.get("min_retained_unseen", math.nan),
                "tasks": per_task,
                "private": max(worst.values()) <= PRIVACY_BOUND,
            }
        )
    return rows


def chosen_default(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rule: highest mean retained unseen-task share among releases at most PRIVACY_BOUND with both oracles."""
    private = [r for r in rows if r["private"] and math.isfinite(r["mean_retained_unseen"])]
    return max(private, key=lambda r: r["mean_retained_unseen"], default=None)


def markdown(
    rows: list[dict[str, Any]], choice: dict[str, Any] | None, faces: dict[str, Any], scores: list[dict[str, Any]]
) -> str:
    lines = [
        "# Privacy-utility frontier",
        "",
        f"Privacy: worst identity accuracy over every attack on {faces['attacked']} private-test faces of "
        f"{faces['people']} people (chance {faces['chance']:.2f}); A3 included for the configured release. "
        "Utility: new heads trained on releases of other people (identity-disjoint 5-fold cross-validation "
        "over the 40 ORL people); "
        "retained share = (released - chance) / (raw - chance), averaged over head families per task; mean and "
        "minimum over the tasks the kit never saw.",
        "",
        "| release | worst identity SFace | worst identity classifier | mean retained (unseen) | min retained (unseen) "
        "| kit-head agreement | rel. distortion | <= 10% both |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['release']} | {r['worst_identity_sface']:.3f} | {r['worst_identity_classifier']:.3f} "
            f"| {r['mean_retained_unseen']:.2f} | {r['min_retained_unseen']:.2f} | {r['kit_head_agreement']:.3f} "
            f"| {r['relative_distortion']:.3f} | {'yes' if r['private'] else 'no'} |"
        )
    lines += development_tables(scores)
    lines += [
        "",
        "## The default's rule",
        "",
        f"Highest mean retained unseen-task share among the releases at most {PRIVACY_BOUND:.0%} identity with both "
        "oracles: " + (f"**{choice['release']}** ({choice['mean_retained_unseen']:.2f})." if choice else "none."),
        "",
    ]
    return "\n".join(lines)


def _task_shares(row: dict[str, Any]) -> list[float]:
    """Retained share per unseen task (mean over head families), tasks without one left out."""
    shares = []
    for families in row["tasks"].values():
        values = [s["retained"] for s in families.values() if not s["seen_by_kit"] and math.isfinite(s["retained"])]
        if values:
            shares.append(sum(values) / len(values))
    return shares


def plot(rows: list[dict[str, Any]], chance: float, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, oracle in zip(axes, ("sface", "classifier"), strict=True):
        for r in rows:
            shares, x = _task_shares(r), r["mean_retained_unseen"]
            xerr = [[x - min(shares)], [max(shares) - x]] if shares else None
            ax.errorbar(x, r[f"worst_identity_{oracle}"], xerr=xerr, fmt="o", capsize=3, label=r["release"])
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.2f}")
        ax.axhline(PRIVACY_BOUND, color="red", linestyle="--", linewidth=0.8, label="10% bound")
        ax.set_xlabel("retained share of raw, unseen tasks\n(mean; bars: lowest to highest task)")
        ax.set_ylabel(f"worst-case identity accuracy ({oracle})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/frontier"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the quick attack budgets (minutes, not an hour)")
    parser.add_argument("--keep-report", type=Path, default=None, help="also torch.save the report object here")
    parser.add_argument(
        "--configured",
        default="default",
        choices=sorted(set(PRESETS) | set(releases(0))),
        help="the preset or release evaluated as the configured release (A3 runs on it)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated releases besides the configured one (default: all of " + ", ".join(releases(0)) + ")",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="leave out Gaussian noise and the paper's Crafter-z"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = EvaluationConfig.quick() if args.quick else EvaluationConfig()
    config = replace(base, betas=(), baselines=not args.no_baselines, development=True, seed=args.seed)
    available = releases(args.seed)
    configured = (
        available[args.configured][1] if args.configured in available else PRESETS[args.configured](seed=args.seed)
    )
    chosen = [key.strip() for key in args.only.split(",")] if args.only else list(available)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"unknown release(s) {unknown}; choose from {sorted(available)}")
    extra = [available[key] for key in chosen if available[key][1] != configured]
    kit = load_kit()
    start = time.perf_counter()
    report = evaluate(
        kit,
        crafter_config=configured,
        config=config,
        defences=extra,
        log=lambda line: print(f"[{time.perf_counter() - start:7.0f}s] {line}", flush=True),
    )
    if args.keep_report is not None:
        torch.save(report, args.keep_report)
    write_report(report, args.out / "evaluation", spec=kit.spec)
    rows = frontier_rows(report)
    choice = chosen_default(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out / "frontier.json",
        {
            "privacy_bound": PRIVACY_BOUND,
            "configured": args.configured,
            "releases": chosen,
            "baselines": not args.no_baselines,
            "faces": report.faces,
            "seconds": report.seconds,
            "rows": rows,
            "chosen_default": choice["release"] if choice else None,
        },
    )
    text = markdown(rows, choice, report.faces, report.development)
    atomic_write(args.out / "frontier.md", lambda path: path.write_text(text + "\n"))
    plot(rows, report.chance, args.out / "frontier.png")
    print(text)
    print(f"\n{report.seconds:.0f} s; wrote {args.out}/frontier.json, frontier.md, frontier.png")


if __name__ == "__main__":
    main()
