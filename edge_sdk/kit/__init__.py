"""Kits: the encoder, generator, amortizer, head and critic a device needs, with a manifest."""

from edge_sdk.kit.kit import MANIFEST_NAME, Kit, default_kit_path, load_kit, save_kit
from edge_sdk.kit.manifest import ComponentFile, KitManifest, TaskSpec
from edge_sdk.kit.models import Architecture, build_models

__all__ = [
    "MANIFEST_NAME",
    "Architecture",
    "ComponentFile",
    "Kit",
    "KitManifest",
    "TaskSpec",
    "build_models",
    "default_kit_path",
    "load_kit",
    "save_kit",
]
