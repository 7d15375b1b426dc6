"""``edge-sdk export onnx``: a kit's networks as ONNX files with checked parity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli._common import handle_errors
from edge_sdk.extras import require_extra
from edge_sdk.fileio import write_json
from edge_sdk.kit import load_kit

__all__ = ["export_onnx"]


@handle_errors
def export_onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the .onnx files and export_report.json.")],
    kit: Annotated[Path | None, typer.Option(help="Kit folder; the bundled default kit if omitted.")] = None,
    component: Annotated[
        list[str] | None, typer.Option(help="Network(s) to export: encoder, head, amortizer, generator (default: all).")
    ] = None,
    int8: Annotated[
        bool, typer.Option(help="Also write encoder.int8.onnx (static int8, calibrated on public faces).")
    ] = False,
) -> None:
    """Export kit networks to ONNX (opset 18, dynamic batch, manifest in metadata) and check them.

    Each file passes onnx.checker and must match torch under onnxruntime's CPU
    provider within rtol 1e-3 / atol 1e-5 on real kit inputs, or the command fails.
    """
    require_extra("export", feature="edge-sdk export onnx")
    from exporters.onnx_export import EXPORTABLE, export_component
    from exporters.quantize import quantize_encoder

    loaded = load_kit(kit)
    names = component or [c for c in EXPORTABLE if c in loaded.components()]
    unknown = [c for c in names if c not in EXPORTABLE]
    if unknown:
        raise typer.BadParameter(f"unknown component(s) {', '.join(unknown)}", param_hint="--component")
    report: dict[str, object] = {"kit": loaded.manifest.name, "models": []}
    for name in names:
        result = export_component(loaded, name, out / f"{name}.onnx")
        report["models"].append(  # type: ignore[attr-defined]
            {
                "component": name,
                "file": result.path.name,
                "bytes": result.bytes,
                "max_abs_diff": result.max_abs_diff,
                "max_rel_diff": result.max_rel_diff,
                "parity_ok": result.parity_ok,
                "seconds": round(result.seconds, 2),
            }
        )
        typer.echo(
            f"{name}: {result.path} ({result.bytes / 1e6:.2f} MB), max |ort - torch| = {result.max_abs_diff:.2e}"
        )
    if int8:
        if "encoder" not in names:
            raise typer.BadParameter("--int8 needs the encoder exported", param_hint="--int8")
        q = quantize_encoder(loaded, out / "encoder.onnx", out / "encoder.int8.onnx")
        report["int8"] = {
            "file": q.path.name,
            "bytes_fp32": q.bytes_fp32,
            "bytes_int8": q.bytes_int8,
            "relative_feature_distance": q.relative_feature_distance,
            "pose_accuracy_fp32": q.pose_accuracy_fp32,
            "pose_accuracy_int8": q.pose_accuracy_int8,
        }
        typer.echo(
            f"encoder int8: {q.path} ({q.bytes_int8} vs {q.bytes_fp32} bytes), feature distance "
            f"{q.relative_feature_distance:.3f}, pose accuracy {q.pose_accuracy_int8:.3f} "
            f"(fp32 {q.pose_accuracy_fp32:.3f})"
        )
    write_json(out / "export_report.json", report)
