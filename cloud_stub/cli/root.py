"""The ``edge-cloud`` typer app: every cloud command assembled (one module per command)."""

from __future__ import annotations

import typer

from cloud_stub.cli.keys import create_key, list_keys, revoke_key
from cloud_stub.cli.serve import serve
from cloud_stub.cli.verify import verify

__all__ = ["app"]

app = typer.Typer(
    name="edge-cloud",
    help="Run and administer the cloud stub (head serving, collection, verification).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.command("verify")(verify)
keys_app = typer.Typer(help="API keys of a cloud stub database.", no_args_is_help=True)
keys_app.command("create")(create_key)
keys_app.command("list")(list_keys)
keys_app.command("revoke")(revoke_key)
app.add_typer(keys_app, name="keys")
