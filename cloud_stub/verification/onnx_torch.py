"""ONNX classifier -> trainable torch module, for fine-tuning an uploaded model during verification.

The project's own converter for the operators small classifiers use (convolutions,
pooling, dense layers, normalisation, activations, reshapes). Float initializers
become ``nn.Parameter`` so the model can be fine-tuned; anything else is refused
with :class:`UnsupportedOnnxError` naming the operators, never approximated.
(``onnx2torch``, the registry's converter, does not accept the opset-18 pooling
nodes that ``torch.onnx.export(dynamo=True)`` writes.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from cloud_stub.errors import ModelRejectedError

__all__ = ["SUPPORTED_OPS", "OnnxModule", "UnsupportedOnnxError", "onnx_to_torch"]


class UnsupportedOnnxError(ModelRejectedError):
    """The model uses ONNX operators or attributes the verifier cannot run in torch."""


Node = tuple[str, list[str], list[str], dict[str, Any]]
Op = Callable[[dict[str, Any], list[Any]], Any]


def _pads(attrs: dict[str, Any], spatial: int) -> list[int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedOnnxError(f"auto_pad={attrs['auto_pad']!r} is not supported; export with explicit pads")
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    # ONNX: (begin_1..begin_n, end_1..end_n); F.pad: (end dim last first): (l, r, t, b).
    torch_pads: list[int] = []
    for axis in reversed(range(spatial)):
        torch_pads += [pads[axis], pads[axis + spatial]]
    return torch_pads


def _conv(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = weight.dim() - 2
    if spatial != 2:
        raise UnsupportedOnnxError(f"Conv with {spatial} spatial dimensions is not supported")
    x = F.pad(x, _pads(attrs, spatial))
    return F.conv2d(
        x,
        weight,
        bias,
        stride=tuple(attrs.get("strides", [1, 1])),
        dilation=tuple(attrs.get("dilations", [1, 1])),
        groups=int(attrs.get("group", 1)),
    )


def _pool(kind: str) -> Op:
    def run(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
        x = args[0]
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides", [1] * len(kernel)))
        ceil = bool(attrs.get("ceil_mode", 0))
        pads = _pads(attrs, len(kernel))
        if kind == "max":
            if any(pads):
                x = F.pad(x, pads, value=float("-inf"))
            return F.max_pool2d(x, kernel, strides, ceil_mode=ceil, dilation=tuple(attrs.get("dilations", [1, 1])))
        if any(pads) and not attrs.get("count_include_pad", 0):
            # Average over the real pixels only: pool ones padded with zeros to count them.
            ones = F.pad(torch.ones_like(x[:1, :1]), pads)
            summed = F.avg_pool2d(F.pad(x, pads), kernel, strides, ceil_mode=ceil, divisor_override=1)
            return summed / F.avg_pool2d(ones, kernel, strides, ceil_mode=ceil, divisor_override=1)
        return F.avg_pool2d(F.pad(x, pads), kernel, strides, ceil_mode=ceil)

    return run


def _gemm(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    a, b = args[0], args[1]
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        out = out + float(attrs.get("beta", 1.0)) * args[2]
    return out


def _batchnorm(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, scale, bias, mean, var = args[:5]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    eps = float(attrs.get("epsilon", 1e-5))
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)


def _flatten(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x = args[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, shape = args[0], [int(s) for s in args[1].tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(attrs: dict[str, Any], args: list[Any]) -> list[int]:
    if len(args) > 1 and args[1] is not None:
        return [int(a) for a in args[1].tolist()]
    return [int(a) for a in attrs.get("axes", [])]


def _squeeze(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    axes = _axes(attrs, args)
    x = args[0]
    if not axes:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x = args[0]
    for axis in sorted(_axes(attrs, args)):
        x = x.unsqueeze(axis if axis >= 0 else axis + x.dim() + 1)
    return x


OPS: dict[str, Op] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda a, x: torch.matmul(x[0], x[1]),
    "Add": lambda a, x: x[0] + x[1],
    "Sub": lambda a, x: x[0] - x[1],
    "Mul": lambda a, x: x[0] * x[1],
    "Div": lambda a, x: x[0] / x[1],
    "Relu": lambda a, x: F.relu(x[0]),
    "LeakyRelu": lambda a, x: F.leaky_relu(x[0], float(a.get("alpha", 0.01))),
    "Sigmoid": lambda a, x: torch.sigmoid(x[0]),
    "Tanh": lambda a, x: torch.tanh(x[0]),
    "Softmax": lambda a, x: torch.softmax(x[0], int(a.get("axis", -1))),
    "LogSoftmax": lambda a, x: torch.log_softmax(x[0], int(a.get("axis", -1))),
    "Identity": lambda a, x: x[0],
    "Dropout": lambda a, x: x[0],  # inference graph: dropout is the identity
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda a, x: x[0].permute(*a["perm"]) if "perm" in a else x[0].permute(*reversed(range(x[0].dim()))),
    "Concat": lambda a, x: torch.cat(x, int(a["axis"])),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "GlobalAveragePool": lambda a, x: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "BatchNormalization": _batchnorm,
}
SUPPORTED_OPS = frozenset(OPS) | {"Constant"}


class OnnxModule(nn.Module):
    """Runs an ONNX graph with torch operations; float initializers are trainable parameters."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted(
            {n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")}
            | {n.op_type for n in graph.node if n.op_type not in SUPPORTED_OPS}
        )
        if unsupported:
            raise UnsupportedOnnxError(
                f"the verifier cannot run operator(s) {', '.join(unsupported)} in torch; supported: "
                f"{', '.join(sorted(SUPPORTED_OPS))}"
            )
        self.parameter_names: dict[str, str] = {}
        self.params = nn.ParameterDict()
        self._constants: dict[str, torch.Tensor] = {}
        for index, tensor in enumerate(graph.initializer):
            array = numpy_helper.to_array(tensor)
            key = f"p{index}"
            if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float64:
                self.params[key] = nn.Parameter(torch.from_numpy(array.astype(np.float32).copy()))
                self.parameter_names[tensor.name] = key
            else:
                self._constants[tensor.name] = torch.from_numpy(array.copy())
        self.nodes: list[Node] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                if "value" not in attrs:
                    raise UnsupportedOnnxError(f"Constant node {node.name!r} without a 'value' tensor")
                self._constants[node.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        initializers = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) < 1:
            raise UnsupportedOnnxError("the verifier needs one input and one output")
        self.input_name, self.output_name = inputs[0], graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.input_name: x, "": None}
        env.update(self._constants)
        env.update({name: self.params[key] for name, key in self.parameter_names.items()})
        for op_type, inputs, outputs, attrs in self.nodes:
            try:
                result = OPS[op_type](attrs, [env[name] for name in inputs])
            except KeyError as exc:
                raise UnsupportedOnnxError(f"{op_type} reads {exc.args[0]!r}, which no node produces") from exc
            except (RuntimeError, IndexError, TypeError, ValueError) as exc:
                raise UnsupportedOnnxError(f"{op_type} failed in torch: {exc}") from exc
            env[outputs[0]] = result
        output: torch.Tensor = env[self.output_name]
        return output


def onnx_to_torch(data: bytes | onnx.ModelProto) -> OnnxModule:
    """Build a trainable torch module from an ONNX classifier.

    Raises:
        UnsupportedOnnxError: An operator or attribute outside :data:`SUPPORTED_OPS`.
        ModelRejectedError: The bytes are not an ONNX model.
    """
    if isinstance(data, bytes):
        try:
            data = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ModelRejectedError("not an ONNX model") from exc
    return OnnxModule(data)
