"""``edge-cloud verify MODEL.onnx --task TASK | --data DIR_OR_NPZ``: is this classifier vicious?"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_stub.errors import ModelRejectedError
from cloud_stub.settings import DEFAULT_REFERENCE_CACHE
from cloud_stub.verification.tasks import MODEL_TASKS
from edge_sdk.console import handle_errors
from edge_sdk.fileio import write_json

__all__ = ["EXIT_VICIOUS", "verify"]

EXIT_VICIOUS = 3


@handle_errors
def verify(
    model: Annotated[Path, typer.Argument(help="The classifier as an ONNX file, exported by any tool.")],
    task: Annotated[str | None, typer.Option(help=f"Claimed built-in task: {', '.join(MODEL_TASKS)}.")] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Your own task instead: a folder of images with labels.csv (columns file,label) or an .npz "
            "with 'images' and 'labels'."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    max_bytes: Annotated[int, typer.Option(min=1, help="Refuse larger files.")] = 64 * 1024 * 1024,
    threads: Annotated[int, typer.Option(min=1, help="Torch and onnxruntime threads.")] = 2,
    budget: Annotated[str, typer.Option(help="'standard' (benchmarked) or 'quick'.")] = "standard",
    reference_cache: Annotated[
        str | None,
        typer.Option(
            help=f"Folder where the reference model's probe is kept between runs (default {DEFAULT_REFERENCE_CACHE}); "
            "'' to train it in every run.",
            envvar="EDGE_CLOUD_REFERENCE_CACHE",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Verify a classifier before it goes to devices: fine-tune divergence, output entropy, decoder probe.

    The model is first run on task images in onnxruntime to find its conventions
    (channels-first or -last, fixed or dynamic batch, logits or probabilities, pixel
    range); exit code 0 when the verdict is honest, 3 when vicious, 2 for a file the
    verifier cannot run, with the reason.
    """
    import torch

    from cloud_stub.verification.operator_data import load_operator_task
    from cloud_stub.verification.verify import verify_onnx

    if (task is None) == (data is None):
        raise typer.BadParameter("give --task for a built-in task or --data for your own", param_hint="--task")
    if task is not None and task not in MODEL_TASKS:
        raise typer.BadParameter(f"choose one of {', '.join(MODEL_TASKS)}", param_hint="--task")
    if budget not in ("standard", "quick"):
        raise typer.BadParameter("choose standard or quick", param_hint="--budget")
    try:
        size = model.stat().st_size
    except OSError as exc:
        raise ModelRejectedError(f"{model}: cannot read ({exc.strerror or exc})") from exc
    if size > max_bytes:
        raise ModelRejectedError(f"{model}: {size} bytes exceeds --max-bytes {max_bytes}")
    torch.set_num_threads(threads)
    if reference_cache is None:  # click reads an empty environment variable as unset; "" means keep nothing
        reference_cache = os.environ.get("EDGE_CLOUD_REFERENCE_CACHE", str(DEFAULT_REFERENCE_CACHE))
    cache = Path(reference_cache) if reference_cache else None
    if data is not None:
        spec = load_operator_task(data)
        typer.echo(f"data: {spec.description}")
        report = verify_onnx(model.read_bytes(), task=spec, budget=budget, threads=threads, reference_cache=cache)
    else:
        assert task is not None
        report = verify_onnx(model.read_bytes(), task=task, budget=budget, threads=threads, reference_cache=cache)
    _print_report(report)
    if out is not None:
        write_json(out, report)
        typer.echo(f"report: {out}")
    if report["verdict"] == "vicious":
        raise typer.Exit(EXIT_VICIOUS)


def _print_report(report: dict[str, Any]) -> None:
    conventions = report["conventions"]
    typer.echo(
        f"model: {conventions['layout']}, batch {conventions['batch'] or 'any'}, {conventions['outputs']}, "
        f"pixels in {conventions['input_range']}"
    )
    for note in conventions["notes"]:
        typer.echo(f"  assumed: {note}")
    typer.echo(
        f"task {report['task']}: accuracy {report['accuracy']:.3f} on "
        f"{report['data']['heldout_images']} held-out images"
    )
    if report["v"] is None:
        typer.echo(f"fine-tune divergence: {report['unavailable']['fine_tune']}")
    else:
        typer.echo(
            f"fine-tune divergence v = {report['v']:.4f} (paper threshold {report['config']['v_threshold']}; "
            f"{'above' if report['v_flag'] else 'below'})"
        )
    reference, retrained = report["reference_probe"], report["retrained_probe"]
    entropy = f"output entropy {report['entropy']:.3f} nats"
    if report["reference_entropy"] is not None:
        entropy += f" (honest reference {report['reference_entropy']:.3f})"
    typer.echo(entropy)
    baselines = [f"predicted class alone {report['label_probe']['psnr']:.2f} dB"]
    if reference:
        baselines.insert(0, f"verifier's reference {reference['psnr']:.2f} dB")
    if retrained:
        baselines.insert(0, f"same graph retrained honestly {retrained['psnr']:.2f} dB")
    typer.echo(
        f"decoder probe PSNR {report['probe']['psnr']:.2f} dB, SSIM {report['probe']['ssim']:.3f}, "
        f"R {report['probe']['risk']:.3f}; baselines: {', '.join(baselines)}; gap {report['psnr_gap_db']:+.2f} dB"
    )
    for signal in ("retrained_baseline", "reference"):
        if signal in report["unavailable"]:
            typer.echo(f"{signal.replace('_', ' ')}: {report['unavailable'][signal]}")
    calibration = report.get("calibration")
    if calibration and calibration["copies"] > 1:
        typer.echo(
            f"calibration: {calibration['copies']} honest copies spread {calibration['spread_db']:.2f} dB; "
            f"margin {calibration['margin_db']:.2f} dB"
        )
    typer.echo(f"verdict: {report['verdict']} ({report['rule']}); {report['seconds']:.1f} s")
