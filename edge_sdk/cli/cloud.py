"""``edge-sdk cloud ...``: the cloud stub's commands under their former name; ``edge-cloud`` is the command.

The device's command line loads nothing of the cloud unless this command runs.
"""

from __future__ import annotations

import typer

__all__ = ["cloud"]


def cloud(ctx: typer.Context) -> None:
    """Same as `edge-cloud` (serve, verify, keys), which needs the 'server' extra."""
    from cloud_stub.cli import main

    main(ctx.args, prog_name="edge-sdk cloud")
