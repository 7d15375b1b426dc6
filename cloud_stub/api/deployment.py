"""Routes tagged ``deployment``: the served head's answers on crafted features."""

from fastapi import APIRouter

from cloud_stub.api.dependencies import BINARY_BODY, Body, KeyId, KitDep, ServedDep, SettingsDep, StoreDep
from cloud_stub.api.schemas import PredictionOut
from edge_sdk.client.payloads import FEATURES_KEY, check_features, decode_tensors

__all__ = ["router"]

router = APIRouter(tags=["deployment"])


@router.post(
    "/v1/predict",
    openapi_extra=BINARY_BODY,
    responses={
        400: {"description": "Body is not safetensors or .npy"},
        413: {"description": "Body too large"},
        422: {"description": "Wrong shape, dtype, batch size, or NaN"},
    },
)
def predict(
    _: KeyId, body: Body, kit: KitDep, served: ServedDep, store: StoreDep, settings: SettingsDep
) -> PredictionOut:
    """Head outputs for a batch of crafted features (safetensors with 'features', or one .npy array)."""
    tensors = decode_tensors(body, required=(FEATURES_KEY,))
    features = check_features(tensors[FEATURES_KEY], kit.feature_shape, max_batch=settings.max_batch)
    served.refresh(store, kit.architecture)
    labels, probabilities, head_id = served.predict(features)
    return PredictionOut(head_id=head_id, labels=labels.tolist(), probabilities=probabilities.tolist())
