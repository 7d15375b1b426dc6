"""Data: pictures to model inputs (decode, detect, align), users' folders, the bundled ORL faces."""

from edge_sdk.data.folder import FolderImages, SkippedImage, iter_folder_batches, list_images, load_folder
from edge_sdk.data.images import (
    PICTURE_FORMATS,
    FacePolicy,
    ImageSpec,
    NoFaceError,
    face_crops,
    load_faces,
    load_image,
    preprocess_image,
    read_picture,
    to_unit_range,
)
from edge_sdk.data.orl import SPLITS, FaceSet, load_orl, orl_root, pose_labels

__all__ = [
    "PICTURE_FORMATS",
    "SPLITS",
    "FacePolicy",
    "FaceSet",
    "FolderImages",
    "ImageSpec",
    "NoFaceError",
    "SkippedImage",
    "face_crops",
    "iter_folder_batches",
    "list_images",
    "load_faces",
    "load_folder",
    "load_image",
    "load_orl",
    "orl_root",
    "pose_labels",
    "preprocess_image",
    "read_picture",
    "to_unit_range",
]
