"""``edge-cloud serve``: run the cloud stub on uvicorn."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_stub.settings import ENV_PREFIX, ServerSettings
from edge_sdk.console import handle_errors

__all__ = ["serve"]


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 picks a free one).")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///FILE.db (default sqlite:///edge-cloud.db) or postgresql+psycopg://USER@HOST/DB.",
            envvar=f"{ENV_PREFIX}DATABASE_URL",
        ),
    ] = None,
    kit: Annotated[
        Path | None,
        typer.Option(help="Kit whose head is served first; the default kit if omitted.", envvar=f"{ENV_PREFIX}KIT"),
    ] = None,
    max_request_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Largest feature payload in bytes.", envvar=f"{ENV_PREFIX}MAX_REQUEST_BYTES"),
    ] = None,
    max_model_bytes: Annotated[
        int | None, typer.Option(min=1, help="Largest uploaded model in bytes.", envvar=f"{ENV_PREFIX}MAX_MODEL_BYTES")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(min=1, help="Most features per request.", envvar=f"{ENV_PREFIX}MAX_BATCH")
    ] = None,
    torch_threads: Annotated[
        int | None, typer.Option(min=1, help="Threads for inference and training.", envvar=f"{ENV_PREFIX}TORCH_THREADS")
    ] = None,
    verify_uploads: Annotated[
        bool | None,
        typer.Option(
            "--verify-uploads/--no-verify-uploads",
            help="Verify uploaded models in the background.",
            envvar=f"{ENV_PREFIX}VERIFY_UPLOADS",
        ),
    ] = None,
    verify_budget: Annotated[
        str | None,
        typer.Option(help="'standard' (benchmarked) or 'quick' verification.", envvar=f"{ENV_PREFIX}VERIFY_BUDGET"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the head on crafted features, collect labelled features, train heads, take model uploads.

    Issue a key first with `edge-cloud keys create --name NAME` (same --database-url);
    every endpoint but /health needs it in the X-API-Key header. The OpenAPI schema is at
    /openapi.json and interactive docs at /docs.
    """
    import uvicorn  # the server extra; imported here so the rest of the CLI works without it

    from cloud_stub.app import create_app

    settings = ServerSettings()
    flags: dict[str, Any] = {
        "database_url": database_url,
        "kit": kit,
        "max_request_bytes": max_request_bytes,
        "max_model_bytes": max_model_bytes,
        "max_batch": max_batch,
        "torch_threads": torch_threads,
        "verify_uploads": verify_uploads,
        "verify_budget": verify_budget,
    }
    try:
        settings = replace(settings, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    app = create_app(settings)
    typer.echo(
        f"cloud stub: database {app.state.store.url.render_as_string(hide_password=True)}, "
        f"serving head {app.state.served.head_id} on http://{host}:{port}"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
