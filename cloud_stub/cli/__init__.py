"""The ``edge-cloud`` command line (``serve``, ``verify``, ``keys``): one module per command.

:func:`main` checks the 'server' extra before anything of the cloud is imported, so a
device-only install gets the pip command to run instead of an import traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

__all__ = ["main"]


def main(args: Sequence[str] | None = None, *, prog_name: str = "edge-cloud") -> None:
    """Console entry point of ``edge-cloud``; ``args`` default to the process's."""
    from edge_sdk.console import EXIT_BAD_INPUT
    from edge_sdk.extras import MissingExtraError, require_extra

    try:
        require_extra("server", feature=prog_name)
    except MissingExtraError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(EXIT_BAD_INPUT) from exc
    from cloud_stub.cli.root import app

    app(args=list(args) if args is not None else None, prog_name=prog_name)
