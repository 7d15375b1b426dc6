"""``edge-cloud serve``: run the cloud stub on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_stub.settings import ServerSettings
from edge_sdk.console import handle_errors

__all__ = ["serve"]


def _option(name: str, **kwargs: Any) -> Any:
    """A flag for a settings field; its help is the field's description (no envvar: the settings read it)."""
    return typer.Option(help=ServerSettings.describe(name), **kwargs)


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 picks a free one).")] = 8000,
    database_url: Annotated[str | None, _option("database_url")] = None,
    kit: Annotated[Path | None, _option("kit")] = None,
    max_request_bytes: Annotated[int | None, _option("max_request_bytes", min=1)] = None,
    max_model_bytes: Annotated[int | None, _option("max_model_bytes", min=1)] = None,
    max_inflight_bytes: Annotated[int | None, _option("max_inflight_bytes", min=1)] = None,
    max_batch: Annotated[int | None, _option("max_batch", min=1)] = None,
    torch_threads: Annotated[int | None, _option("torch_threads", min=1)] = None,
    verify_uploads: Annotated[bool | None, _option("verify_uploads")] = None,
    verify_budget: Annotated[str | None, _option("verify_budget")] = None,
    reference_cache: Annotated[str | None, _option("reference_cache")] = None,
    job_memory_mib: Annotated[int | None, _option("job_memory_mib", min=1024)] = None,
    job_seconds: Annotated[float | None, _option("job_seconds", min=0.001)] = None,
    check_seconds: Annotated[float | None, _option("check_seconds", min=0.001)] = None,
    rate_limit: Annotated[str | None, _option("rate_limit")] = None,
    rate_limit_storage: Annotated[str | None, _option("rate_limit_storage")] = None,
    max_models_per_key: Annotated[int | None, _option("max_models_per_key", min=1)] = None,
    max_pending_per_key: Annotated[int | None, _option("max_pending_per_key", min=1)] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the head on crafted features, collect labelled features, train heads, take model uploads.

    Issue a key first with `edge-cloud keys create --name NAME` (same --database-url);
    every endpoint but /health needs it in the X-API-Key header. The OpenAPI schema is at
    /openapi.json and interactive docs at /docs. Every setting also reads its
    EDGE_CLOUD_* environment variable; a flag wins over it.
    """
    import uvicorn  # the server extra; imported here so the rest of the CLI works without it

    from cloud_stub.app import create_app

    flags: dict[str, Any] = {
        "database_url": database_url,
        "kit": kit,
        "max_request_bytes": max_request_bytes,
        "max_model_bytes": max_model_bytes,
        "max_inflight_bytes": max_inflight_bytes,
        "max_batch": max_batch,
        "torch_threads": torch_threads,
        "verify_uploads": verify_uploads,
        "verify_budget": verify_budget,
        "reference_cache": reference_cache,
        "job_memory_mib": job_memory_mib,
        "job_seconds": job_seconds,
        "check_seconds": check_seconds,
        "rate_limit": rate_limit,
        "rate_limit_storage": rate_limit_storage,
        "max_models_per_key": max_models_per_key,
        "max_pending_per_key": max_pending_per_key,
    }
    try:
        settings = ServerSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    app = create_app(settings)
    typer.echo(
        f"cloud stub: database {app.state.store.url.render_as_string(hide_password=True)}, "
        f"serving head {app.state.served.head_id} on http://{host}:{port}"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
