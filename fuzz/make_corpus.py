"""Write the fuzzers' seed inputs into fuzz/corpus/ (valid inputs of each kind, and near misses)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

from cloud_helpers import linear_classifier_onnx  # noqa: E402
from edge_sdk.client.payloads import encode_tensors  # noqa: E402


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _small_cnn() -> bytes:
    """Conv, Relu, MaxPool, global pooling and Gemm for (N, 1, 64, 64) -> 3 classes, in under 1 KB."""
    rng = np.random.default_rng(1)
    weights = {
        "conv_w": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
        "conv_b": np.zeros(2, np.float32),
        "fc_w": rng.normal(size=(3, 2)).astype(np.float32),
        "fc_b": np.zeros(3, np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["p"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        ],
        "small-cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _npz(images: np.ndarray, labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels)
    return buffer.getvalue()


def main() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
    seeds = {
        "payloads": {
            "features.safetensors": encode_tensors({"features": features}),
            "samples.safetensors": encode_tensors({"features": features, "labels": np.array([0, 2])}),
            "features.npy": _npy(features),
            "fortran.npy": _npy(np.asfortranarray(features)),
            "big-endian.npy": _npy(features.astype(">f4")),
            "float64.npy": _npy(features.astype(np.float64)),
        },
        "onnx_upload": {
            "small-cnn.onnx": _small_cnn(),
            "linear-8x8.onnx": linear_classifier_onnx((1, 8, 8), 3),  # refused: the task's images are 64 x 64
        },
        "datasets": {
            "small.npz": _npz(images=rng.random((12, 1, 8, 8), dtype=np.float32), labels=np.arange(12) % 2),
            "uint8.npz": _npz(images=(rng.random((12, 8, 8)) * 255).astype(np.uint8), labels=np.arange(12) % 3),
        },
    }
    for target, files in seeds.items():
        folder = ROOT / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
