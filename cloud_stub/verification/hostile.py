"""Hostile ONNX uploads: the files an attacker sends a verification service, for benchmarks and tests.

Each builder returns the bytes of one upload for a task whose images are
``input_shape = (C, H, W)`` and whose classes are ``classes``. The service must refuse
every one with a 4xx and the reason, or run it to a verdict, without running out of
memory or time and without stopping serving (``benchmarks/hostile_load.py``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "HOSTILE_KINDS",
    "control_flow",
    "external_data",
    "hostile_models",
    "many_nodes",
    "memory_bomb",
    "non_finite_outputs",
    "not_onnx",
    "slow_graph",
    "static_size_bomb",
    "truncated",
    "wrong_classes",
]

Shape = tuple[int, int, int]


def _model(
    nodes: list[onnx.NodeProto],
    input_shape: Shape,
    classes: int,
    initializers: dict[str, np.ndarray],
    *,
    opset: int = 13,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _head(source: str, channels: int, classes: int) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Spatial mean of ``source`` (N, channels, H, W) and a MatMul to the classes."""
    nodes = [
        helper.make_node("ReduceMean", [source], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head_weight"], ["logits"]),
    ]
    return nodes, {"head_weight": np.ones((channels, classes), np.float32)}


def memory_bomb(input_shape: Shape, classes: int, *, channels: int, copies: int) -> bytes:
    """``copies`` live tensors of ``(N, channels, H, W)``: each within the static size cap, together not."""
    _, height, width = input_shape
    scaled = [f"scaled{i}" for i in range(copies)]
    nodes = [helper.make_node("Expand", ["image", "wide_shape"], ["wide"])]
    nodes += [helper.make_node("Mul", ["wide", f"scale{i}"], [name]) for i, name in enumerate(scaled)]
    nodes.append(helper.make_node("Sum", scaled, ["total"]))
    head, weights = _head("total", channels, classes)
    initializers: dict[str, np.ndarray] = {"wide_shape": np.array([1, channels, height, width], np.int64), **weights}
    initializers |= {f"scale{i}": np.array(i + 1.0, np.float32) for i in range(copies)}
    return _model(nodes + head, input_shape, classes, initializers)


def slow_graph(input_shape: Shape, classes: int, *, width: int = 1024, layers: int = 4000) -> bytes:
    """A chain of ``layers`` ``(N, width) x (width, width)`` products sharing one weight: a 4 MB file, a long run.

    Under the 5,000-node cap; 4,000 layers of width 1,024 are about 0.5 TFLOP on the probe batch.
    """
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "last"], ["column"]),
        helper.make_node("Expand", ["column", "row_shape"], ["h0"]),
    ]
    nodes += [helper.make_node("MatMul", [f"h{i}", "square"], [f"h{i + 1}"]) for i in range(layers)]
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "narrow"], ["logits"]))
    initializers: dict[str, np.ndarray] = {
        "last": np.array([1], np.int64),
        "row_shape": np.array([1, width], np.int64),
        "square": np.eye(width, dtype=np.float32),
        "narrow": np.ones((width, classes), np.float32),
    }
    return _model(nodes, input_shape, classes, initializers)


def control_flow(input_shape: Shape, classes: int) -> bytes:
    """A ``Loop`` with no trip count and a condition that stays true: runs forever if run."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["v"], ["v_out"]), helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["start"]),
        helper.make_node("Loop", ["", "", "start"], ["logits"], body=body),
    ]
    weight = np.ones((int(np.prod(input_shape)), classes), np.float32)
    return _model(nodes, input_shape, classes, {"weight": weight})


def many_nodes(input_shape: Shape, classes: int, *, nodes: int = 20_000) -> bytes:
    """``nodes`` chained ``Identity`` nodes before a small classifier."""
    chain = [helper.make_node("Identity", ["image" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(nodes)]
    head, weights = _head(f"t{nodes - 1}", input_shape[0], classes)
    return _model(chain + head, input_shape, classes, weights)


def static_size_bomb(input_shape: Shape, classes: int, *, planes: int = 1 << 20) -> bytes:
    """``ConstantOfShape`` asking for ``(planes, C, H, W)`` floats from a file of a few hundred bytes."""
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=numpy_helper.from_array(np.array([1.0], np.float32))
        ),
        helper.make_node("ReduceMean", ["big"], ["one"], axes=[0], keepdims=1),
        helper.make_node("Add", ["image", "one"], ["sum"]),
    ]
    head, weights = _head("sum", input_shape[0], classes)
    return _model(nodes + head, input_shape, classes, {"shape": np.array([planes, *input_shape], np.int64), **weights})


def non_finite_outputs(input_shape: Shape, classes: int) -> bytes:
    """Logits divided by zero: infinite or NaN on every image."""
    head, weights = _head("image", input_shape[0], classes)
    head[-1] = helper.make_node("MatMul", ["pooled", "head_weight"], ["raw"])
    head.append(helper.make_node("Div", ["raw", "zero"], ["logits"]))
    return _model(head, input_shape, classes, {**weights, "zero": np.zeros((), np.float32)})


def wrong_classes(input_shape: Shape, classes: int) -> bytes:
    """A working classifier with one class too many."""
    head, weights = _head("image", input_shape[0], classes + 1)
    return _model(head, input_shape, classes + 1, weights)


def external_data(input_shape: Shape, classes: int) -> bytes:
    """A weight stored 'outside the file': the server would read a path of the uploader's choosing."""
    model = onnx.load_from_string(wrong_classes(input_shape, classes - 1))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    return model.SerializeToString()


def truncated(input_shape: Shape, classes: int, *, fraction: float = 0.5) -> bytes:
    """A working classifier cut short."""
    data = memory_bomb(input_shape, classes, channels=2, copies=1)
    return data[: int(len(data) * fraction)]


def not_onnx(input_shape: Shape, classes: int) -> bytes:
    """A pickle (would run code if unpickled) where an ONNX file belongs."""
    return pickle.dumps({"weights": np.zeros((classes, *input_shape), np.float32)})


HOSTILE_KINDS: dict[str, Callable[[Shape, int, np.random.Generator], bytes]] = {
    "memory bomb": lambda s, k, rng: memory_bomb(
        s, k, channels=int(rng.integers(64, 120)) * 4, copies=int(rng.integers(6, 12))
    ),
    "slow graph": lambda s, k, rng: slow_graph(s, k, layers=int(rng.integers(3000, 4900))),
    "control flow": lambda s, k, rng: control_flow(s, k),
    "many nodes": lambda s, k, rng: many_nodes(s, k, nodes=int(rng.integers(5_001, 30_000))),
    "static size bomb": lambda s, k, rng: static_size_bomb(s, k, planes=1 << int(rng.integers(16, 31))),
    "non-finite outputs": lambda s, k, rng: non_finite_outputs(s, k),
    "wrong class count": lambda s, k, rng: wrong_classes(s, k),
    "external data": lambda s, k, rng: external_data(s, k),
    "truncated": lambda s, k, rng: truncated(s, k, fraction=float(rng.uniform(0.05, 0.95))),
    "not ONNX (pickle)": lambda s, k, rng: not_onnx(s, k),
}


def hostile_models(
    input_shape: Shape, classes: int, *, count: int = 100, seed: int = 0, kinds: dict[str, int] | None = None
) -> list[tuple[str, bytes]]:
    """``count`` hostile uploads, ``(kind, bytes)``, in a seeded order.

    Args:
        input_shape: The task's images ``(C, H, W)``.
        classes: The task's classes.
        count: How many; split evenly over the kinds unless ``kinds`` gives counts.
        seed: Seed of the sizes and the order.
        kinds: Uploads per kind name of :data:`HOSTILE_KINDS`.
    """
    rng = np.random.default_rng(seed)
    if kinds is None:
        names = list(HOSTILE_KINDS)
        kinds = {name: count // len(names) + (i < count % len(names)) for i, name in enumerate(names)}
    uploads = [(name, HOSTILE_KINDS[name](input_shape, classes, rng)) for name, n in kinds.items() for _ in range(n)]
    order = rng.permutation(len(uploads))
    return [uploads[i] for i in order]
