"""``edge-sdk kit info``: print a kit's manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli._common import handle_errors
from edge_sdk.kit import load_kit

__all__ = ["kit_info"]


@handle_errors
def kit_info(
    path: Annotated[Path | None, typer.Argument(help="Kit folder; the bundled default kit if omitted.")] = None,
) -> None:
    """Validate a kit (manifest, files, checksums, shapes) and print its manifest as JSON."""
    kit = load_kit(path)
    info = {"path": str(kit.path), **kit.manifest.to_json()}
    typer.echo(json.dumps(info, indent=2))
