"""The ``edge-sdk cloud`` command group: one module per command."""

from __future__ import annotations

import typer

from cloud_stub.cli.keys import create_key, list_keys, revoke_key
from cloud_stub.cli.serve import serve
from cloud_stub.cli.verify import verify

__all__ = ["cloud_app"]

cloud_app = typer.Typer(help="Run and administer the cloud stub (head serving, collection, verification).",
                        no_args_is_help=True)  # fmt: skip
cloud_app.command("serve")(serve)
cloud_app.command("verify")(verify)
keys_app = typer.Typer(help="API keys of a cloud stub database.", no_args_is_help=True)
keys_app.command("create")(create_key)
keys_app.command("list")(list_keys)
keys_app.command("revoke")(revoke_key)
cloud_app.add_typer(keys_app, name="keys")
