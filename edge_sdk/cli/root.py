"""The root `edge-sdk` typer app: every command group assembled (one module per command)."""

from __future__ import annotations

import typer

from edge_sdk.cli.cloud import cloud
from edge_sdk.cli.craft import craft
from edge_sdk.cli.data_orl import orl_faces
from edge_sdk.cli.encode import encode
from edge_sdk.cli.evaluate import evaluate_command
from edge_sdk.cli.explain import explain_command
from edge_sdk.cli.export_onnx import export_onnx
from edge_sdk.cli.kit_info import kit_info
from edge_sdk.cli.kit_train import kit_train

__all__ = ["app", "main"]

app = typer.Typer(
    name="edge-sdk",
    help="Craft face features on the device so that only privacy-preserving features leave it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kit_app = typer.Typer(help="Inspect and train kits (encoder, generator, amortizer, head).", no_args_is_help=True)
kit_app.command("info")(kit_info)
kit_app.command("train")(kit_train)
app.add_typer(kit_app, name="kit")
app.command("encode")(encode)
app.command("craft")(craft)
app.command("evaluate")(evaluate_command)
app.command("explain")(explain_command)
data_app = typer.Typer(help="Bundled data: the ORL faces with the project's split.", no_args_is_help=True)
data_app.command("orl-faces")(orl_faces)
app.add_typer(data_app, name="data")
export_app = typer.Typer(help="Export kit networks for on-device runtimes.", no_args_is_help=True)
export_app.command("onnx")(export_onnx)
app.add_typer(export_app, name="export")
app.command(
    "cloud",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # --help goes to edge-cloud
)(cloud)


def main() -> None:
    """Console entry point."""
    app()
