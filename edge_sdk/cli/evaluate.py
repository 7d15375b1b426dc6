"""``edge-sdk evaluate --out DIR``: attack released features every way and report what leaks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli._common import KitOption, LatentNoiseOption, PresetOption, crafter_config, handle_errors
from edge_sdk.extras import require_extra
from edge_sdk.kit import load_kit

__all__ = ["evaluate_command"]


def _betas(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"comma-separated numbers expected, got {text!r}", param_hint="--betas") from exc


@handle_errors
def evaluate_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and the figures.")],
    kit: KitOption = None,
    quick: Annotated[
        bool, typer.Option(help="Minutes instead of the full benchmark: 20 faces, short attacks.")
    ] = False,
    preset: PresetOption = "default",
    beta: Annotated[float | None, typer.Option(help="Crafting beta evaluated (utility weight).")] = None,
    steps: Annotated[int | None, typer.Option(min=0, help="Crafting feature updates per batch.")] = None,
    latent_noise: LatentNoiseOption = None,
    betas: Annotated[
        str | None, typer.Option(help="Comma-separated betas of the trade-off sweep (e.g. 0.05,0.2,1).")
    ] = None,
    images: Annotated[int | None, typer.Option(min=1, max=80, help="Private-test faces attacked.")] = None,
    development: Annotated[
        bool | None,
        typer.Option(
            help="Release all 400 ORL faces and train new heads on them for tasks the kit never saw "
            "(default: on, off with --quick)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of crafting and of every attacker.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final table.")] = False,
) -> None:
    """Release the private-test faces under each defence, attack them, and report the worst case.

    Defences: raw features, Crafter (the configured beta and a sweep), Gaussian noise
    at the same distortion, Crafter-z. Attacks: white-box inversion (random and
    amortizer start), black-box decoder, hybrid, A1 adaptive decoder and generator,
    A2 other generator; A3 averaging on the configured Crafter. Judges: the project's
    identity classifier and the independent SFace recognizer. Utility: the kit head's
    answers, and new heads trained on each release for the kit's task and four it
    never saw (the development scenario). Needs the 'eval' extra.
    """
    require_extra("eval", feature="edge-sdk evaluate")
    from edge_sdk.evaluation.harness import EvaluationConfig, evaluate
    from edge_sdk.evaluation.report import write_report

    config = EvaluationConfig.quick() if quick else EvaluationConfig()
    sweep = _betas(betas)
    try:
        config = replace(
            config,
            seed=seed,
            images=images or config.images,
            betas=sweep if sweep is not None else config.betas,
            development=config.development if development is None else development,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    crafting = crafter_config(preset, seed=seed, beta=beta, steps=steps, latent_noise=latent_noise)
    loaded = load_kit(kit)
    report = evaluate(
        loaded, crafter_config=crafting, config=config, progress=not quiet, log=None if quiet else typer.echo
    )
    paths = write_report(report, out, spec=loaded.spec)
    chance = report.chance
    typer.echo(f"\nworst-case identity accuracy over all attacks (chance {chance:.2f}):")
    width = max(len(d.defence) for d in report.defences)
    for d in report.defences:
        worst = ", ".join(f"{o} {w['identity']:.3f}" for o, w in d.worst_case.items())
        retained = (
            f"; new heads keep {d.development['mean_retained_unseen']:.2f} of raw on unseen tasks"
            if d.development
            else ""
        )
        typer.echo(
            f"  {d.defence:<{width}} {worst}; pose {d.utility['pose_accuracy']:.3f} "
            f"(raw {d.utility['pose_accuracy_raw']:.3f}){retained}"
        )
    typer.echo(f"report: {paths['markdown']} (JSON {paths['json'].name}, {len(paths) - 2} figures)")
