"""``edge-cloud verify MODEL.onnx --task TASK``: is this classifier vicious?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud_stub.errors import ModelRejectedError
from cloud_stub.verification.tasks import MODEL_TASKS
from edge_sdk.console import handle_errors
from edge_sdk.fileio import write_json

__all__ = ["EXIT_VICIOUS", "verify"]

EXIT_VICIOUS = 3


@handle_errors
def verify(
    model: Annotated[Path, typer.Argument(help="The classifier as an ONNX file (images in [0, 1] -> logits).")],
    task: Annotated[str, typer.Option(help=f"Claimed task: {', '.join(MODEL_TASKS)}.")],
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    max_bytes: Annotated[int, typer.Option(min=1, help="Refuse larger files.")] = 64 * 1024 * 1024,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 2,
    budget: Annotated[str, typer.Option(help="'standard' (benchmarked) or 'quick'.")] = "standard",
) -> None:
    """Verify a classifier before it goes to devices: fine-tune divergence, output entropy, decoder probe.

    Exit code 0 when the verdict is honest, 3 when vicious, 2 for a file that is not a
    valid ONNX classifier for the task.
    """
    import torch

    from cloud_stub.verification.verify import verify_onnx

    if task not in MODEL_TASKS:
        raise typer.BadParameter(f"choose one of {', '.join(MODEL_TASKS)}", param_hint="--task")
    try:
        size = model.stat().st_size
    except OSError as exc:
        raise ModelRejectedError(f"{model}: cannot read ({exc.strerror or exc})") from exc
    if size > max_bytes:
        raise ModelRejectedError(f"{model}: {size} bytes exceeds --max-bytes {max_bytes}")
    torch.set_num_threads(threads)
    if budget not in ("standard", "quick"):
        raise typer.BadParameter("choose standard or quick", param_hint="--budget")
    report = verify_onnx(model.read_bytes(), task=task, budget=budget)
    typer.echo(f"task {task}: accuracy {report['accuracy']:.3f} on {report['data']['heldout_images']} held-out images")
    typer.echo(
        f"fine-tune divergence v = {report['v']:.4f} (paper threshold {report['config']['v_threshold']}; "
        f"{'above' if report['v_flag'] else 'below'})"
    )
    typer.echo(f"output entropy {report['entropy']:.3f} nats (honest reference {report['reference_entropy']:.3f})")
    typer.echo(
        f"decoder probe PSNR {report['probe']['psnr']:.2f} dB, SSIM {report['probe']['ssim']:.3f}, "
        f"R {report['probe']['risk']:.3f} (honest reference {report['reference_probe']['psnr']:.2f} dB, "
        f"predicted class alone {report['label_probe']['psnr']:.2f} dB; gap to the "
        f"{report['config']['probe_baseline']} baseline {report['psnr_gap_db']:+.2f} dB)"
    )
    typer.echo(f"verdict: {report['verdict']} ({report['rule']}); {report['seconds']:.1f} s")
    if out is not None:
        write_json(out, report)
        typer.echo(f"report: {out}")
    if report["verdict"] == "vicious":
        raise typer.Exit(EXIT_VICIOUS)
