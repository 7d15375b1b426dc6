"""Wire format of tensors between the device and the cloud: safetensors or ``.npy`` bytes.

Binary tensors, never JSON float lists (a 32x16x16 float32 feature is 32 KiB as
bytes and several times that as text) and never pickles: both formats carry only
dtype, shape and raw data, so decoding a hostile payload cannot run code.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tokenize
import zlib
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from edge_sdk.errors import EdgeSDKError, NonFiniteError, TensorShapeError

__all__ = [
    "FEATURES_KEY",
    "LABELS_KEY",
    "MAPS_KEY",
    "NPY_MAGIC",
    "PREDICTED_KEY",
    "PROBABILITIES_KEY",
    "PayloadFormatError",
    "check_features",
    "check_labels",
    "check_probabilities",
    "decode_npy",
    "decode_tensors",
    "encode_tensors",
    "read_npy_header",
]

FEATURES_KEY = "features"
LABELS_KEY = "labels"
# An explanation upload: attribution maps (B, H, W), the predicted classes they explain
# (B,) and, optionally, the head's probabilities (B, classes).
MAPS_KEY = "maps"
PREDICTED_KEY = "predicted"
PROBABILITIES_KEY = "probabilities"
NPY_MAGIC = b"\x93NUMPY"
# A safetensors header is JSON of tensor names, dtypes, shapes and offsets; a huge one
# is either a bug or an attempt to make the server parse megabytes of JSON.
_MAX_SAFETENSORS_HEADER = 1 << 20


class PayloadFormatError(EdgeSDKError):
    """A request body is neither a safetensors file nor a ``.npy`` array, or it is truncated."""


def encode_tensors(tensors: dict[str, np.ndarray]) -> bytes:
    """Serialise named arrays as one safetensors payload.

    Example:
        >>> body = encode_tensors({"features": np.zeros((2, 3), np.float32)})
        >>> decode_tensors(body)["features"].shape
        (2, 3)
    """
    return save_safetensors({name: np.ascontiguousarray(array) for name, array in tensors.items()})


_MAX_DIMENSIONS = 64  # numpy's own limit (NPY_MAXDIMS)
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floating point
# What numpy's header parser (literal_eval over tokenize) and a damaged zip member raise.
_NPY_HEADER_ERRORS = (
    ValueError,
    EOFError,
    OSError,
    SyntaxError,
    TypeError,
    RecursionError,
    tokenize.TokenError,
    zlib.error,
)


def read_npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read an ``.npy`` header from ``stream``: ``(shape, fortran_order, dtype)``, leaving it at the data.

    Only plain numeric dtypes (bool, integers, floats) and non-negative shapes pass;
    the caller checks the declared size against the bytes it has before allocating.

    Raises:
        PayloadFormatError: Not an ``.npy`` header numpy can read (its parser raises
            several error types on damaged headers), another format version than 1.0
            or 2.0, an object, structured, string or time dtype, or a negative dimension.
    """
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise PayloadFormatError(f".npy format version {version[0]}.{version[1]} is not accepted (1.0 or 2.0)")
    except _NPY_HEADER_ERRORS as exc:
        raise PayloadFormatError(f"malformed .npy header: {type(exc).__name__}: {exc}") from exc
    if dtype.kind not in _NUMERIC_KINDS or dtype.itemsize == 0:
        raise PayloadFormatError(
            f".npy dtype {dtype.descr if dtype.fields else dtype.str!r} is refused (an object array would need "
            "unpickling, a structured, string or time one is not a tensor): send a plain numeric array"
        )
    if any(n < 0 for n in shape) or len(shape) > _MAX_DIMENSIONS:
        raise PayloadFormatError(
            f".npy header declares shape {tuple(shape)}: dimensions must be non-negative, at most {_MAX_DIMENSIONS}"
        )
    return tuple(int(n) for n in shape), bool(fortran_order), dtype


def decode_npy(body: bytes) -> np.ndarray:
    """One ``.npy`` array, its header checked against the body before anything is allocated.

    ``np.load`` reserves the size a header declares before reading the data, so a
    192-byte body can ask for terabytes; here the declared size must equal the bytes
    that follow the header. Any byte order is converted to the machine's.

    Raises:
        PayloadFormatError: As :func:`read_npy_header`, or the declared size is not the
            size of the data.
    """
    stream = io.BytesIO(body)
    shape, fortran_order, dtype = read_npy_header(stream)
    count = math.prod(shape)
    declared, present = count * dtype.itemsize, len(body) - stream.tell()
    if declared != present:
        raise PayloadFormatError(
            f".npy header declares shape {shape} of {dtype.str} ({declared} bytes) but {present} bytes follow it"
        )
    try:
        flat = np.frombuffer(body, dtype=dtype, count=count, offset=stream.tell())
        array = flat.reshape(shape, order="F" if fortran_order else "C")
    except ValueError as exc:  # a dimension numpy cannot index (over 2**63), even with no data
        raise PayloadFormatError(f".npy header declares shape {shape}, which numpy cannot hold: {exc}") from exc
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")  # a writable copy, native byte order


def decode_tensors(
    body: bytes, *, npy_name: str = FEATURES_KEY, required: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Decode a safetensors payload, or a single ``.npy`` array named ``npy_name``.

    Args:
        body: The request body.
        npy_name: The name a bare ``.npy`` array gets.
        required: Names the payload must hold.

    Raises:
        PayloadFormatError: The bytes are empty, truncated or of another format, or a
            ``.npy`` header declares another size than the body holds, or an object or
            structured dtype, or a required tensor is missing.
    """
    tensors = _decode_tensors(body, npy_name=npy_name)
    missing = set(required) - set(tensors)
    if missing:
        raise PayloadFormatError(f"payload lacks {sorted(missing)} (got {sorted(tensors)})")
    return tensors


def _decode_tensors(body: bytes, *, npy_name: str) -> dict[str, np.ndarray]:
    if not body:
        raise PayloadFormatError("empty request body; send a safetensors file or a .npy array")
    if body.startswith(NPY_MAGIC):
        return {npy_name: decode_npy(body)}
    if len(body) < 8:
        raise PayloadFormatError("payload too short to be a safetensors file or a .npy array")
    (header_size,) = struct.unpack("<Q", body[:8])
    if header_size > min(_MAX_SAFETENSORS_HEADER, len(body) - 8):
        raise PayloadFormatError("payload is neither a .npy array nor a safetensors file (bad header size)")
    try:
        header = json.loads(body[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadFormatError("payload is neither a .npy array nor a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise PayloadFormatError("safetensors header is not a JSON object")
    try:
        return dict(load_safetensors(body))
    except Exception as exc:  # safetensors raises its own SafetensorError for every kind of damage
        raise PayloadFormatError(f"malformed safetensors payload: {exc}") from exc


def check_features(array: np.ndarray, shape: tuple[int, ...], *, max_batch: int, name: str = "features") -> np.ndarray:
    """Check a batch ``(B, *shape)``: float32, finite, ``1 <= B <= max_batch``.

    Args:
        array: The batch.
        shape: Shape of one item.
        max_batch: Most items in one batch.
        name: What the batch holds, for the error messages (features, maps, ...).

    Returns:
        The batch, C-contiguous float32.

    Raises:
        TensorShapeError: Wrong dtype, rank, shape, or batch size.
        NonFiniteError: NaN or infinity anywhere.

    Example:
        >>> check_features(np.zeros((2, 4, 2, 2), np.float32), (4, 2, 2), max_batch=8).shape
        (2, 4, 2, 2)
    """
    if array.dtype != np.float32:
        raise TensorShapeError(f"{name} must be float32, got {array.dtype}")
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != tuple(shape):
        expected = ", ".join(map(str, shape))
        raise TensorShapeError(f"{name} must have shape (batch, {expected}), got {tuple(array.shape)}")
    if not 1 <= array.shape[0] <= max_batch:
        raise TensorShapeError(f"batch of {array.shape[0]} {name}; send between 1 and {max_batch}")
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if not finite.all():
        raise NonFiniteError(f"{name} hold NaN or infinite values in {int((~finite).sum())} of {len(array)} items")
    return np.ascontiguousarray(array)


def check_labels(array: np.ndarray, *, batch: int, num_classes: int, name: str = "labels") -> np.ndarray:
    """Check class labels: integer, shape ``(batch,)``, each in ``[0, num_classes)``.

    Returns:
        The labels as int64.

    Raises:
        TensorShapeError: Not integers, wrong shape, or a label out of range.
    """
    if not np.issubdtype(array.dtype, np.integer):
        raise TensorShapeError(f"{name} must be integers, got {array.dtype}")
    if array.shape != (batch,):
        raise TensorShapeError(f"{name} must have shape ({batch},) to match the batch, got {tuple(array.shape)}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise TensorShapeError(f"{name} must lie in [0, {num_classes}), got {array.min()}..{array.max()}")
    return array.astype(np.int64)


def check_probabilities(array: np.ndarray, *, batch: int, num_classes: int) -> np.ndarray:
    """Check class probabilities ``(batch, num_classes)``: float32, finite, in ``[0, 1]``, rows summing to 1.

    Returns:
        The probabilities, C-contiguous float32.

    Raises:
        TensorShapeError: Wrong dtype or shape, a value outside ``[0, 1]``, or a row not summing to 1 (within 1e-3).
        NonFiniteError: NaN or infinity anywhere.
    """
    array = check_features(array, (num_classes,), max_batch=batch, name="probabilities")
    if len(array) != batch:
        raise TensorShapeError(f"probabilities must have {batch} rows to match the batch, got {len(array)}")
    if array.min() < 0 or array.max() > 1 or not np.allclose(array.sum(axis=1), 1.0, atol=1e-3):
        raise TensorShapeError("probabilities must lie in [0, 1] and each row sum to 1")
    return array
