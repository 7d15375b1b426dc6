"""Data: the bundled ORL faces with the project's split, and users' image folders."""

from edge_sdk.data.folder import FolderImages, SkippedImage, iter_folder_batches, list_images, load_folder
from edge_sdk.data.images import ImageSpec, load_image, preprocess_image, to_unit_range
from edge_sdk.data.orl import SPLITS, FaceSet, load_orl, orl_root, pose_labels

__all__ = [
    "SPLITS",
    "FaceSet",
    "FolderImages",
    "ImageSpec",
    "SkippedImage",
    "iter_folder_batches",
    "list_images",
    "load_folder",
    "load_image",
    "load_orl",
    "orl_root",
    "pose_labels",
    "preprocess_image",
    "to_unit_range",
]
