"""``edge-sdk kit train``: reproduce the default kit from the bundled public faces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli._common import DeviceOption, handle_errors, use_threads
from edge_sdk.extras import require_extra
from edge_sdk.kit.training import TrainingConfig

__all__ = ["kit_train"]


@handle_errors
def kit_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new kit and its report.")],
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = TrainingConfig.seed,
    pose_epochs: Annotated[int, typer.Option(min=0)] = TrainingConfig.pose_epochs,
    gan_steps: Annotated[int, typer.Option(min=0, help="Generator updates of the WGAN-GP.")] = TrainingConfig.gan_steps,
    amortizer_steps: Annotated[int, typer.Option(min=0)] = TrainingConfig.amortizer_steps,
    report_inversion_steps: Annotated[int, typer.Option(min=0, help="Inversion steps measured in the report.")] = 200,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads (results are reproducible per thread count).")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Train a kit on the ORL public faces (s1-s20) and write it with its training report.

    With the defaults this reproduces the bundled kit (about 30 minutes on 2 CPU cores).
    """
    require_extra("train", feature="edge-sdk kit train")
    from edge_sdk.kit.recipe import train_orl_kit
    from edge_sdk.kit.report import write_training_report

    use_threads(threads)
    config = TrainingConfig(seed=seed, pose_epochs=pose_epochs, gan_steps=gan_steps, amortizer_steps=amortizer_steps)
    kit, log = train_orl_kit(out, config=config, progress=not quiet, device=device)
    report = write_training_report(kit, log, out, inversion_steps=report_inversion_steps)
    typer.echo(f"kit written to {out}; report: {out / 'report.md'}")
    if "pose_accuracy" in report.metrics:
        for split, acc in report.metrics["pose_accuracy"].items():
            typer.echo(f"  pose accuracy {split}: {acc:.3f}")
