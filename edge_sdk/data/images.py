"""From a picture file to the encoder's input: decode, find and align the face, normalise.

The device pipeline is ``file -> read_picture -> face_crops -> encoder -> crafter``:

* :func:`read_picture` decodes the formats on :data:`PICTURE_FORMATS`, recognised by
  content whatever the suffix says, into an RGB float array: EXIF orientation
  applied, 16-bit and float pictures rescaled (not clipped), transparent borders cut
  off and remaining transparency composited on mid-grey, very large JPEGs decoded at
  reduced size.
* :func:`face_crops` finds faces with YuNet (:mod:`edge_sdk.faces`) and warps each onto
  the kit's canonical crop (``ImageSpec.face_template``); the largest face by default,
  every face with ``all_faces``. A kit without a template, or ``align=False``, takes
  the centre square of the picture instead, for inputs that are already aligned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_sdk.errors import ImageLoadError
from edge_sdk.faces.alignment import align_face, resize_picture
from edge_sdk.faces.detector import default_detector

__all__ = [
    "PICTURE_FORMATS",
    "FacePolicy",
    "ImageSpec",
    "NoFaceError",
    "aligned_input",
    "face_crops",
    "load_faces",
    "load_image",
    "picture_array",
    "preprocess_image",
    "read_picture",
    "to_unit_range",
]

# Pillow plugins allowed to decode a file; PPM also reads PGM and PBM, JPEG also
# reads MPO (multi-picture JPEG from phones and 3D cameras), and GIF and MPO give
# their first frame. Anything else (EPS, which runs Ghostscript, PSD, ...) is refused
# before decoding.
PICTURE_FORMATS = ("PNG", "JPEG", "PPM", "BMP", "WEBP", "TIFF", "GIF")

# Decompression bombs: a 64x64 kit never needs more than this many decoded pixels.
_MAX_PIXELS = 64_000_000
# JPEGs larger than this on their longer side are decoded at 1/2, 1/4 or 1/8 scale
# (Pillow's draft mode), keeping at least this many pixels.
_DRAFT_SIDE = 2048
# Background of transparent pixels inside the picture (model-space zero for mean 0.5).
_BACKGROUND = 0.5
# ITU-R 601-2 luma, as Pillow's ``convert("L")``.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class NoFaceError(ImageLoadError):
    """The picture decodes but the detector finds no face in it."""


@dataclass(frozen=True)
class ImageSpec:
    """How a face becomes the encoder's input tensor.

    Attributes:
        size: Side of the square model input in pixels.
        channels: 1 for grayscale, 3 for RGB.
        mean: Subtracted from pixels scaled to ``[0, 1]``.
        std: Divides the centred pixels; ``mean=0.5, std=0.5`` maps to ``[-1, 1]``,
            the range of the generator's ``tanh`` output.
        face_template: Where the five face landmarks (right eye, left eye, nose tip,
            right and left mouth corner) sit in the input, as ``(x, y)`` fractions of
            its side; faces are detected and aligned onto it. ``None``: the kit takes
            the centre square of each picture (kits made before alignment).
    """

    size: int = 64
    channels: int = 1
    mean: float = 0.5
    std: float = 0.5
    face_template: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"image size must be at least 8, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.face_template is not None:
            points = np.asarray(self.face_template, dtype=np.float64)
            if points.shape != (5, 2) or not np.all(np.isfinite(points)) or np.ptp(points[:, 0]) <= 0:
                raise ValueError(f"face_template must be five distinct finite (x, y) points, got {self.face_template}")
            object.__setattr__(self, "face_template", tuple((float(x), float(y)) for x, y in points))


@dataclass(frozen=True)
class FacePolicy:
    """Which faces of a picture become inputs.

    Attributes:
        align: Detect and align faces when the kit has a face template; ``False``
            takes the centre square, for pictures that are already aligned crops.
        all_faces: Every detected face, largest first; ``False``: the largest only.
    """

    align: bool = True
    all_faces: bool = False


def _detected_format(path: Path) -> str:
    """The Pillow format whose signature matches the file's first bytes, or ``"unknown"``."""
    with path.open("rb") as handle:
        prefix = handle.read(64)
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a plugin's signature check on odd bytes
            continue
    return "unknown"


def _unit_range(image: Image.Image) -> np.ndarray:
    """Pixels of a single-band 16-bit, 32-bit or float image rescaled to ``[0, 1]``.

    16-bit images are divided by 65535. 32-bit integer images are divided by 65535
    when every value fits 16 bits, else by 2**31 - 1. Float images are taken as
    ``[0, 1]`` when their maximum is at most 1, as ``[0, 255]`` when at most 255,
    and are divided by their maximum otherwise.
    """
    array = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ImageLoadError("the picture holds NaN or infinite pixel values")
    if image.mode.startswith("I;16"):
        scale = 65535.0
    elif image.mode == "I":
        scale = 65535.0 if array.max(initial=0) <= 65535 else 2.0**31 - 1
    else:
        top = array.max(initial=0)
        scale = 1.0 if top <= 1 else (255.0 if top <= 255 else float(top))
    return np.clip(array / scale, 0.0, 1.0).astype(np.float32)


def picture_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode as ``(H, W, 3)`` float32 RGB in ``[0, 1]``.

    Transparent borders are cut off; transparency left inside the remaining box is
    composited on mid-grey.

    Raises:
        ImageLoadError: Every pixel is transparent, or pixel values are not finite.
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        gray = _unit_range(image)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[:, :, 3]
        rows, cols = np.flatnonzero(alpha.max(axis=1) > 0), np.flatnonzero(alpha.max(axis=0) > 0)
        if rows.size == 0:
            raise ImageLoadError("every pixel of the picture is transparent")
        box = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        weight = box[:, :, 3:]
        return np.ascontiguousarray(box[:, :, :3] * weight + _BACKGROUND * (1.0 - weight), dtype=np.float32)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def read_picture(path: str | Path) -> np.ndarray:
    """Decode a picture file as ``(H, W, 3)`` float32 RGB in ``[0, 1]``, upright.

    Raises:
        ImageLoadError: The file is missing, empty, truncated, not an image, in a
            format outside :data:`PICTURE_FORMATS` (named in the message), or larger
            than any face picture should be.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{path}: file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            Image.init()  # registers every plugin; `formats` below decides which may open the file
            try:
                handle = Image.open(path, formats=PICTURE_FORMATS)
            except UnidentifiedImageError:
                detected = _detected_format(path)
                if detected in PICTURE_FORMATS or detected == "unknown":
                    raise ImageLoadError(f"{path}: not a readable image") from None
                allowed = ", ".join(PICTURE_FORMATS)
                raise ImageLoadError(f"{path}: {detected} pictures are not read (allowed: {allowed})") from None
            with handle:
                longer = max(handle.size)
                if handle.format in ("JPEG", "MPO") and longer > _DRAFT_SIDE:
                    factor = _DRAFT_SIDE / longer
                    handle.draft(handle.mode, (round(handle.width * factor), round(handle.height * factor)))
                if handle.width * handle.height > _MAX_PIXELS:
                    raise ImageLoadError(
                        f"{path}: {handle.width}x{handle.height} pixels is over the {_MAX_PIXELS} limit"
                    )
                handle.load()
                upright = ImageOps.exif_transpose(handle)
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: no such file") from exc
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({exc})") from exc
    try:
        return picture_array(upright)
    except ImageLoadError as exc:
        raise ImageLoadError(f"{path}: {exc}") from None


def _model_input(crop: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """``(S, S, 3)`` RGB in ``[0, 1]`` -> ``(C, S, S)`` normalised tensor."""
    if spec.channels == 1:
        crop = (crop @ _LUMA)[:, :, None]
    array = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32)
    return (torch.from_numpy(array) - spec.mean) / spec.std


def _centre_square(picture: np.ndarray, size: int) -> np.ndarray:
    """The centre square of ``picture`` resized to ``size`` (bilinear, antialiased)."""
    height, width = picture.shape[:2]
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    square = picture[top : top + side, left : left + side]
    return resize_picture(square, (size, size))


def face_crops(picture: np.ndarray, spec: ImageSpec, *, policy: FacePolicy = FacePolicy()) -> list[torch.Tensor]:
    """The model inputs of one picture: its faces aligned, or its centre square.

    Args:
        picture: ``(H, W, 3)`` float32 RGB in ``[0, 1]``, as :func:`read_picture` gives.
        spec: The kit's input size, channels, normalisation and face template.
        policy: Align or not; the largest face or all of them.

    Returns:
        ``(C, S, S)`` float32 tensors, the largest face first.

    Raises:
        NoFaceError: Alignment is on and the detector finds no face.
    """
    if spec.face_template is None or not policy.align:
        return [_model_input(_centre_square(picture, spec.size), spec)]
    faces = sorted(default_detector().detect(picture), key=lambda face: -face.area)
    if not faces:
        raise NoFaceError("no face found")
    chosen = faces if policy.all_faces else faces[:1]
    return [aligned_input(picture, face.landmarks, spec) for face in chosen]


def aligned_input(picture: np.ndarray, landmarks: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """The model input of the face whose five landmarks are known: warped onto the kit's face template.

    Args:
        picture: ``(H, W, 3)`` float32 RGB in ``[0, 1]``, as :func:`read_picture` gives.
        landmarks: ``(5, 2)`` ``(x, y)`` pixels in ``picture``, in the detector's order
            (see :class:`edge_sdk.faces.detector.Face`).
        spec: The kit's input; it must have a face template.

    Returns:
        A float32 tensor ``(channels, size, size)``.

    Raises:
        ValueError: ``spec`` has no face template, or the landmarks are not five distinct points.
    """
    if spec.face_template is None:
        raise ValueError("this kit takes centre squares (no face template); there is nothing to align to")
    return _model_input(align_face(picture, landmarks, size=spec.size, template=spec.face_template), spec)


def preprocess_image(image: Image.Image, spec: ImageSpec, *, policy: FacePolicy = FacePolicy()) -> torch.Tensor:
    """The model input of a decoded PIL image: its largest face, or its centre square.

    Args:
        image: A decoded PIL image of any mode and aspect ratio (apply EXIF
            orientation first, as :func:`read_picture` does).
        spec: Target size, channels, normalisation and face template.
        policy: Align or not (``all_faces`` is ignored: one tensor is returned).

    Returns:
        A float32 tensor of shape ``(channels, size, size)``.

    Raises:
        NoFaceError: Alignment is on and no face is found.

    Example:
        >>> from PIL import Image
        >>> x = preprocess_image(Image.new("L", (92, 112), 255), ImageSpec())
        >>> tuple(x.shape), float(x.max())
        ((1, 64, 64), 1.0)
    """
    return face_crops(picture_array(image), spec, policy=FacePolicy(align=policy.align))[0]


def to_unit_range(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Undo the normalisation: map model-space images back to ``[0, 1]`` pixels."""
    return (images * spec.std + spec.mean).clamp(0.0, 1.0)


def load_faces(path: str | Path, spec: ImageSpec, *, policy: FacePolicy = FacePolicy()) -> list[torch.Tensor]:
    """Decode one picture file and return its model inputs, the largest face first.

    Raises:
        ImageLoadError: The file cannot be decoded (see :func:`read_picture`).
        NoFaceError: Alignment is on and no face is found. The message names the file.
    """
    picture = read_picture(path)
    try:
        return face_crops(picture, spec, policy=policy)
    except NoFaceError as exc:
        raise NoFaceError(f"{path}: {exc}") from None


def load_image(path: str | Path, spec: ImageSpec, *, policy: FacePolicy = FacePolicy()) -> torch.Tensor:
    """Decode one picture file and return the model input of its largest face.

    Raises:
        ImageLoadError: The file is missing, empty, truncated, not an allowed image,
            or larger than any face picture should be. The message names the file.
        NoFaceError: Alignment is on and no face is found.
    """
    return load_faces(path, spec, policy=FacePolicy(align=policy.align))[0]
