"""Routes tagged ``service``: liveness and what the service serves."""

from fastapi import APIRouter

import edge_sdk
from cloud_stub.api.dependencies import KeyId, KitDep, ServedDep, SettingsDep, StoreDep
from cloud_stub.api.schemas import Health, KitInfo, VersionInfo

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get("/health")
def health() -> Health:
    """Liveness: answers without a key."""
    return Health(status="ok", version=edge_sdk.__version__)


@router.get("/v1/version")
def version(_: KeyId, kit: KitDep, served: ServedDep, store: StoreDep, settings: SettingsDep) -> VersionInfo:
    """Service version, the kit it serves and the active head."""
    return VersionInfo(
        service="edge-feature-sdk cloud stub",
        version=edge_sdk.__version__,
        kit=KitInfo(
            name=kit.manifest.name, feature_shape=list(kit.feature_shape), num_classes=kit.architecture.num_classes
        ),
        active_head_id=served.head_id,
        database=store.backend,
        max_batch=settings.max_batch,
    )
