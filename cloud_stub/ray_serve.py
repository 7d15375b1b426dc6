"""Scale-out: the same FastAPI app as a Ray Serve deployment (optional extra ``ray``).

Each replica builds its own app (store connection, kit, head, training worker) from
the settings, so nothing unpicklable crosses process boundaries. Replicas share the
database: uploads from any replica land in the same tables, a job is claimed by
exactly one replica, and replicas follow the store's active head, so a head trained
in one replica is served by all within a second. Use PostgreSQL when replicas run on
several machines; SQLite works for replicas on one machine.

Run it with Ray's CLI::

    serve run cloud_stub.ray_serve:app_builder database_url=sqlite:///cloud.db num_replicas=2
"""

from __future__ import annotations

from typing import Any

from cloud_stub.settings import ServerSettings

__all__ = ["app_builder", "build_deployment"]


def build_deployment(
    settings: ServerSettings | None = None, *, num_replicas: int = 2, cpus_per_replica: float = 1.0
) -> Any:
    """A Ray Serve application serving the cloud stub from ``num_replicas`` replicas.

    Args:
        settings: Server settings; read from ``EDGE_CLOUD_*`` variables if omitted.
        num_replicas: Replica processes.
        cpus_per_replica: CPUs Ray reserves per replica.

    Returns:
        A bound ``ray.serve.Application``: pass it to ``serve.run``.

    Raises:
        ImportError: Ray Serve is not installed (``pip install 'edge-feature-sdk[ray]'``).
    """
    try:
        from ray import serve
    except ImportError as exc:
        raise ImportError("Ray Serve is not installed: pip install 'edge-feature-sdk[ray]'") from exc
    from cloud_stub.app import create_app

    chosen = settings or ServerSettings()

    def build_app() -> Any:
        # A builder, not an app: Ray calls it inside each replica (it must be a plain
        # function: Ray would take a functools.partial for the ASGI app itself).
        return create_app(chosen)

    replica = serve.ingress(build_app)()
    deployment: Any = serve.deployment(
        replica, name="cloud-stub", num_replicas=num_replicas, ray_actor_options={"num_cpus": cpus_per_replica}
    )
    return deployment.bind()


def app_builder(args: dict[str, str]) -> Any:
    """Entry point of ``serve run cloud_stub.ray_serve:app_builder key=value ...``.

    Keys are the fields of :class:`ServerSettings` plus ``num_replicas`` and
    ``cpus_per_replica``; unset fields come from ``EDGE_CLOUD_*`` variables or defaults.
    """
    args = dict(args)
    num_replicas = int(args.pop("num_replicas", 2))
    cpus = float(args.pop("cpus_per_replica", 1.0))
    text: dict[str, Any] = args  # parsed and checked as the environment's values are
    settings = ServerSettings(**text)
    return build_deployment(settings, num_replicas=num_replicas, cpus_per_replica=cpus)
