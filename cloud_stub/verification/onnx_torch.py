"""ONNX classifier -> trainable torch module, for fine-tuning an uploaded model during verification.

The project's own converter for the operators classifiers use (convolutions, pooling,
dense layers, normalisation, activations, padding, reshapes and the shape arithmetic
exporters write around them), checked against onnxruntime on every upload (the
verifier compares the two on task images before it fine-tunes). Tensors of more than
one value become ``nn.Parameter`` so the model can be fine-tuned; single values
(epsilons, exponents, pad values) stay constants and BatchNormalization statistics
are buffers, as in ``nn.BatchNorm2d``. Anything else is refused with
:class:`UnsupportedOnnxError` naming the operators or attributes, never approximated.
(``onnx2torch`` 1.5.15, the registry's converter, needs torchvision, which the
registry ships only as a CUDA build, and does not accept the opset-18 pooling nodes
``torch.onnx.export(dynamo=True)`` writes.)
"""

from __future__ import annotations

import copy
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

__all__ = ["SUPPORTED_OPS", "OnnxModule", "UnsupportedOnnxError", "onnx_to_torch", "training_mode_nodes"]


class UnsupportedOnnxError(ModelRejectedError):
    """The model uses ONNX operators or attributes the verifier cannot run in torch."""


Node = tuple[str, list[str], list[str], dict[str, Any]]
Op = Callable[[dict[str, Any], list[Any]], Any]

_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float32,  # the verifier computes in float32
    onnx.TensorProto.FLOAT16: torch.float32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int64,
    onnx.TensorProto.INT8: torch.int64,
    onnx.TensorProto.UINT8: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pads(attrs: dict[str, Any], x: torch.Tensor, kernel: list[int]) -> list[int]:
    """``F.pad`` pads (last dimension first) from ONNX ``pads`` or ``auto_pad`` (Conv and pooling)."""
    spatial = len(kernel)
    auto_pad = _text(attrs.get("auto_pad", "NOTSET"))
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * (2 * spatial)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # ONNX: output = ceil(input / stride); the odd pixel of padding goes at the end (UPPER) or start (LOWER).
        strides = list(attrs.get("strides", [1] * spatial))
        dilations = list(attrs.get("dilations", [1] * spatial))
        begin, end = [], []
        for axis in range(spatial):
            size = x.shape[2 + axis]
            out = -(-size // strides[axis])
            total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    else:
        raise UnsupportedOnnxError(f"auto_pad={auto_pad!r} is not an ONNX padding mode")
    # ONNX: (begin_1..begin_n, end_1..end_n); F.pad: (end dim last first): (l, r, t, b).
    torch_pads: list[int] = []
    for axis in reversed(range(spatial)):
        torch_pads += [pads[axis], pads[axis + spatial]]
    return torch_pads


def _conv(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    spatial = weight.dim() - 2
    if spatial not in (1, 2):
        raise UnsupportedOnnxError(f"Conv with {spatial} spatial dimensions is not supported")
    x = F.pad(x, _pads(attrs, x, list(weight.shape[2:])))
    conv = F.conv2d if spatial == 2 else F.conv1d
    return conv(
        x,
        weight,
        bias,
        stride=tuple(attrs.get("strides", [1] * spatial)),
        dilation=tuple(attrs.get("dilations", [1] * spatial)),
        groups=int(attrs.get("group", 1)),
    )


def _pool(kind: str) -> Op:
    def run(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
        x = args[0]
        kernel = list(attrs["kernel_shape"])
        if len(kernel) != 2:
            raise UnsupportedOnnxError(f"{kind} pooling over {len(kernel)} dimensions is not supported")
        strides = tuple(attrs.get("strides", [1] * len(kernel)))
        ceil = bool(attrs.get("ceil_mode", 0))
        pads = _pads(attrs, x, kernel)
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


def _pad(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    """ONNX ``Pad`` (opsets 2-21): pads from the attribute (before 11) or the second input, optional axes."""
    x = args[0]
    pads = [int(p) for p in (args[1].tolist() if len(args) > 1 and args[1] is not None else attrs["pads"])]
    value = args[2] if len(args) > 2 and args[2] is not None and args[2].numel() else attrs.get("value", 0.0)
    axes = [int(a) % x.dim() for a in args[3].tolist()] if len(args) > 3 and args[3] is not None else None
    axes = axes if axes is not None else list(range(x.dim()))
    if len(pads) != 2 * len(axes):
        raise UnsupportedOnnxError(f"Pad with {len(pads)} pads for {len(axes)} axes")
    full = {axis: (pads[i], pads[i + len(axes)]) for i, axis in enumerate(axes)}
    first = min((axis for axis, pair in full.items() if any(pair)), default=x.dim())
    torch_pads: list[int] = []  # F.pad: the last axis first
    for axis in range(x.dim() - 1, first - 1, -1):
        torch_pads += list(full.get(axis, (0, 0)))
    if not torch_pads:
        return x
    mode = _text(attrs.get("mode", "constant"))
    if mode == "constant":
        return F.pad(x, torch_pads, value=float(value))
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedOnnxError(f"Pad mode {mode!r} is not supported")
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if first < 2:
        raise UnsupportedOnnxError(f"Pad mode {mode!r} on the batch or channel axis is not supported")
    # torch pads every spatial axis in these modes: name them all, zeros where ONNX pads none.
    spatial_pads: list[int] = []
    for axis in range(x.dim() - 1, 1, -1):
        spatial_pads += list(full.get(axis, (0, 0)))
    return F.pad(x, spatial_pads, mode=torch_mode)


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
    if attrs.get("training_mode", 0):
        raise UnsupportedOnnxError(_TRAINING_MODE_REASON)
    x, scale, bias, mean, var = args[:5]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    eps = float(attrs.get("epsilon", 1e-5))
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)


def _layernorm(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.dim()
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, float(attrs.get("epsilon", 1e-5)))


def _flatten(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x = args[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, shape = args[0], [int(s) for s in args[1].tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    export_batch = attrs.get(_EXPORT_BATCH)
    if export_batch is not None and shape and shape[0] == export_batch and x.shape[0] != export_batch:
        shape[0] = x.shape[0]  # a graph exported for one batch size, run on another
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


def _reduce(kind: str) -> Op:
    def run(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
        x = args[0]
        axes = _axes(attrs, args)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(a % x.dim() for a in axes)
        if kind == "max":
            return x.amax(dim=dims, keepdim=keep)
        return x.mean(dim=dims, keepdim=keep) if kind == "mean" else x.sum(dim=dims, keepdim=keep)

    return run


def _slice(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x = args[0]
    if len(args) > 1:
        starts, ends = args[1].tolist(), args[2].tolist()
        axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    else:  # opset < 10: attributes
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis, size = int(axis) % x.dim(), x.shape[int(axis)]
        start, end, step = int(start), int(end), int(step)
        if step == 0:
            raise UnsupportedOnnxError("Slice with step 0")
        # ONNX's clamping: negative bounds count from the end; a negative step may end at -1.
        start, end = start + size if start < 0 else start, end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
        empty = (end - start) * step <= 0  # ONNX gives an empty axis; torch.arange refuses the range
        index = torch.zeros(0, dtype=torch.int64) if empty else torch.arange(start, end, step, dtype=torch.int64)
        x = torch.index_select(x, axis, index)
    return x


def _gather(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    x, indices = args[0], args[1].long()
    axis = int(attrs.get("axis", 0)) % x.dim()
    flat = torch.index_select(x, axis, indices.reshape(-1) % x.shape[axis])
    return flat.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])


def _constant_of_shape(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    value = attrs.get("value")
    fill = torch.from_numpy(numpy_helper.to_array(value).copy()).reshape(()) if value is not None else torch.tensor(0.0)
    return torch.full([int(s) for s in args[0].tolist()], fill.item(), dtype=fill.dtype)


def _cast(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    to = int(attrs["to"])
    if to not in _DTYPES:
        raise UnsupportedOnnxError(f"Cast to {onnx.TensorProto.DataType.Name(to)} is not supported")
    return args[0].to(_DTYPES[to])


def _clip(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
    high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
    return torch.clamp(args[0], None if low is None else float(low), None if high is None else float(high))


def _dropout(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    if len(args) > 2 and args[2] is not None and bool(args[2]):
        raise UnsupportedOnnxError(_TRAINING_MODE_REASON)
    return args[0]  # inference graph: dropout is the identity


def _gelu(attrs: dict[str, Any], args: list[Any]) -> torch.Tensor:
    return F.gelu(args[0], approximate="tanh" if _text(attrs.get("approximate", "none")) == "tanh" else "none")


_ALLOCATION_FAILURE = "can't allocate memory"  # torch's DefaultCPUAllocator, under RLIMIT_AS or without RAM
_EXPORT_BATCH = "__export_batch__"  # set on Reshape nodes by OnnxModule(export_batch=...)

_TRAINING_MODE_REASON = (
    "the graph was exported in training mode (BatchNormalization training_mode=1 or a Dropout told to drop): "
    "its outputs depend on the rest of the batch or on chance; export the model after model.eval()"
)

OPS: dict[str, Op] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda a, x: torch.matmul(x[0], x[1]),
    "Add": lambda a, x: x[0] + x[1],
    "Sub": lambda a, x: x[0] - x[1],
    "Mul": lambda a, x: x[0] * x[1],
    "Div": lambda a, x: x[0] / x[1] if x[0].is_floating_point() else torch.div(x[0], x[1], rounding_mode="trunc"),
    "Pow": lambda a, x: torch.pow(x[0], x[1]),
    "Sqrt": lambda a, x: torch.sqrt(x[0]),
    "Exp": lambda a, x: torch.exp(x[0]),
    "Log": lambda a, x: torch.log(x[0]),
    "Neg": lambda a, x: -x[0],
    "Abs": lambda a, x: torch.abs(x[0]),
    "Reciprocal": lambda a, x: torch.reciprocal(x[0]),
    "Erf": lambda a, x: torch.erf(x[0]),
    "Max": lambda a, x: torch.stack(torch.broadcast_tensors(*x)).amax(0),
    "Min": lambda a, x: torch.stack(torch.broadcast_tensors(*x)).amin(0),
    "Clip": _clip,
    "Relu": lambda a, x: F.relu(x[0]),
    "LeakyRelu": lambda a, x: F.leaky_relu(x[0], float(a.get("alpha", 0.01))),
    "PRelu": lambda a, x: torch.where(x[0] >= 0, x[0], x[0] * x[1]),
    "Elu": lambda a, x: F.elu(x[0], float(a.get("alpha", 1.0))),
    "Selu": lambda a, x: F.selu(x[0]),
    "Softplus": lambda a, x: F.softplus(x[0]),
    "HardSigmoid": lambda a, x: torch.clamp(float(a.get("alpha", 0.2)) * x[0] + float(a.get("beta", 0.5)), 0, 1),
    "HardSwish": lambda a, x: F.hardswish(x[0]),
    "Gelu": _gelu,
    "Sigmoid": lambda a, x: torch.sigmoid(x[0]),
    "Tanh": lambda a, x: torch.tanh(x[0]),
    "Softmax": lambda a, x: torch.softmax(x[0], int(a.get("axis", -1))),
    "LogSoftmax": lambda a, x: torch.log_softmax(x[0], int(a.get("axis", -1))),
    "Identity": lambda a, x: x[0],
    "Dropout": _dropout,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda a, x: x[0].permute(*a["perm"]) if "perm" in a else x[0].permute(*reversed(range(x[0].dim()))),
    "Concat": lambda a, x: torch.cat(x, int(a["axis"])),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": lambda a, x: torch.tensor(x[0].shape, dtype=torch.int64)[int(a.get("start", 0)) : a.get("end")],
    "Gather": _gather,
    "Slice": _slice,
    "Cast": _cast,
    "ConstantOfShape": _constant_of_shape,
    "Expand": lambda a, x: x[0] * torch.ones([int(s) for s in x[1].tolist()], dtype=x[0].dtype),
    "Pad": _pad,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "GlobalAveragePool": lambda a, x: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda a, x: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
}
SUPPORTED_OPS = frozenset(OPS) | {"Constant"}


def _constant_value(attrs: dict[str, Any], name: str) -> torch.Tensor:
    if "value" in attrs:
        return torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    for key in ("value_int", "value_ints"):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=torch.int64)
    raise UnsupportedOnnxError(f"Constant node {name!r} holds neither a tensor nor numbers")


def training_mode_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute differently in training mode: BatchNormalization ``training_mode=1``, Dropout told to drop.

    Example:
        >>> from onnx import helper
        >>> node = helper.make_node("BatchNormalization", list("xsbmv"), ["y"], training_mode=1, name="bn1")
        >>> training_mode_nodes(helper.make_model(helper.make_graph([node], "g", [], [])))
        ['bn1']
    """
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            found.append(node.name or node.output[0])
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            flag = constants.get(node.input[2])
            if flag is None or bool(np.asarray(flag).any()):  # a computed flag could be true
                found.append(node.name or node.output[0])
    return found


def _batchnorm_statistics(graph: onnx.GraphProto) -> dict[str, str]:
    """BatchNormalization mean and variance inputs -> the initializer each comes from (through Identity nodes)."""
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {t.name for t in graph.initializer}
    found: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        for name in node.input[3:5]:
            source = name
            while source in producers and producers[source].op_type == "Identity":
                source = producers[source].input[0]
            if source in initializers:
                found[name] = source
    return found


def _check_supported(model: onnx.ModelProto) -> None:
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
    if training_mode_nodes(model):
        raise UnsupportedOnnxError(_TRAINING_MODE_REASON)


class OnnxModule(nn.Module):
    """Runs an ONNX graph with torch operations.

    Tensors of more than one value are trainable parameters, single values are
    constants, and BatchNormalization running means and variances are buffers (a
    fine-tune must not move them, let alone below zero).
    """

    def __init__(self, model: onnx.ModelProto, *, export_batch: int | None = None) -> None:
        super().__init__()
        graph = model.graph
        _check_supported(model)
        statistics = _batchnorm_statistics(graph)
        # Inputs read as something other than a statistic: those initializers are weights.
        weights = {
            name
            for node in graph.node
            if not (node.op_type == "Identity" and node.output[0] in statistics)
            for position, name in enumerate(node.input)
            if not (node.op_type == "BatchNormalization" and position in (3, 4))
        }
        self.parameter_names: dict[str, str] = {}
        self.buffer_names: dict[str, str] = {}
        self.params = nn.ParameterDict()
        self._constants: dict[str, torch.Tensor] = {}
        for index, tensor in enumerate(graph.initializer):
            array = numpy_helper.to_array(tensor)
            key = f"p{index}"
            if not np.issubdtype(array.dtype, np.floating):
                self._constants[tensor.name] = torch.from_numpy(array.copy())
                continue
            value = torch.from_numpy(array.astype(np.float32).copy())
            for number, (name, _) in enumerate(item for item in statistics.items() if item[1] == tensor.name):
                # A copy of its own, read under its own name: exporters share one initializer
                # between equal tensors (a fresh BatchNorm's running mean and bias are both zeros).
                self.register_buffer(f"{key}_s{number}", value.clone())
                self.buffer_names[_statistic(name)] = f"{key}_s{number}"
            if value.numel() > 1 and tensor.name in weights:
                self.params[key] = nn.Parameter(value)
                self.parameter_names[tensor.name] = key
            else:
                self._constants[tensor.name] = value
        self.nodes: list[Node] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                self._constants[node.output[0]] = _constant_value(attrs, node.name)
                continue
            inputs = list(node.input)
            if node.op_type == "BatchNormalization":
                inputs = [
                    _statistic(name) if position in (3, 4) and name in statistics else name
                    for position, name in enumerate(inputs)
                ]
            if node.op_type == "Reshape" and export_batch is not None:
                attrs[_EXPORT_BATCH] = export_batch
            self.nodes.append((node.op_type, inputs, list(node.output), attrs))
        self.roles = _roles(self.nodes, self.parameter_names, self.buffer_names)
        initializers = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) < 1:
            raise UnsupportedOnnxError("the verifier needs one input and one output")
        self.input_name, self.output_name = inputs[0], graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.input_name: x, "": None}
        env.update(self._constants)
        env.update({name: self.params[key] for name, key in self.parameter_names.items()})
        env.update({name: getattr(self, key) for name, key in self.buffer_names.items()})
        for op_type, inputs, outputs, attrs in self.nodes:
            try:
                result = OPS[op_type](attrs, [env[name] for name in inputs])
            except KeyError as exc:
                raise UnsupportedOnnxError(f"{op_type} reads {exc.args[0]!r}, which no node produces") from exc
            except (RuntimeError, IndexError, TypeError, ValueError) as exc:
                if _ALLOCATION_FAILURE in str(exc):  # torch's CPU allocator reports it as a RuntimeError
                    raise MemoryError(f"{op_type}: {exc}") from exc
                raise UnsupportedOnnxError(f"{op_type} failed in torch: {exc}") from exc
            env[outputs[0]] = result
        output: torch.Tensor = env[self.output_name]
        return output

    def reinitialise(self, generator: torch.Generator) -> OnnxModule:
        """A copy of the same graph with fresh weights, drawn as torch initialises its layers.

        Convolution and dense weights are drawn uniformly in ``+-1/sqrt(fan_in)`` (torch's
        default Kaiming-uniform), biases and shifts are zero, normalisation scales one,
        BatchNorm statistics zero mean and unit variance, PReLU slopes 0.25, anything
        else normal with standard deviation 0.02 (as transformers initialise embeddings).
        """
        fresh = copy.deepcopy(self)
        with torch.no_grad():
            for key, tensor in [*fresh.params.items(), *fresh.named_buffers()]:
                fresh_value = _initial_value(fresh.roles.get(key, ("", 0, {})), tensor.shape, generator)
                tensor.copy_(fresh_value)
        return fresh


def _roles(
    nodes: list[Node], parameters: dict[str, str], buffers: dict[str, str]
) -> dict[str, tuple[str, int, dict[str, Any]]]:
    """Parameter or buffer key -> (operator, input position, attributes) of the first node that reads it."""
    roles: dict[str, tuple[str, int, dict[str, Any]]] = {}
    keys = {**parameters, **buffers}
    for op_type, inputs, _, attrs in nodes:
        for position, name in enumerate(inputs):
            key = keys.get(name)
            if key is not None and key not in roles:
                roles[key] = (op_type, position, attrs)
    return roles


def _statistic(name: str) -> str:
    """The name a BatchNormalization statistic is read under (its buffer, apart from any weight of the same name)."""
    return f"{name}::statistic"


def _initial_value(
    role: tuple[str, int, dict[str, Any]], shape: torch.Size, generator: torch.Generator
) -> torch.Tensor:
    op, position, attrs = role
    ones, zeros = torch.ones(shape), torch.zeros(shape)
    if op == "BatchNormalization":
        return (ones, ones, zeros, zeros, ones)[position]
    if op == "LayerNormalization":
        return ones if position == 1 else zeros
    if op == "PRelu":
        return torch.full(shape, 0.25)
    if op in ("Add", "Sub") or (op in ("Conv", "Gemm") and position == 2):
        return zeros
    if op in ("Mul", "Div") and len(shape) <= 1:
        return ones
    fan_in = None
    if op == "Conv" and position == 1:
        fan_in = math.prod(shape[1:])
    elif op == "Gemm" and position in (0, 1):
        transposed = bool(attrs.get("transB" if position == 1 else "transA", 0))
        fan_in = shape[1] if transposed == (position == 1) else shape[0]
    elif op == "MatMul" and len(shape) >= 2:
        fan_in = shape[-2] if position == 1 else shape[-1]
    if fan_in:
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return torch.randn(shape, generator=generator) * 0.02


def onnx_to_torch(data: bytes | onnx.ModelProto, *, export_batch: int | None = None) -> OnnxModule:
    """Build a trainable torch module from an ONNX classifier.

    Args:
        data: The ONNX bytes or model.
        export_batch: The batch size a fixed-batch graph was exported for: Reshape targets
            that start with it take the actual batch instead (the caller checks the
            result against onnxruntime).

    Raises:
        UnsupportedOnnxError: An operator or attribute outside :data:`SUPPORTED_OPS`, or
            a graph exported in training mode.
        ModelRejectedError: The bytes are not an ONNX model.
    """
    if isinstance(data, bytes):
        try:
            data = onnx.load_model_from_string(data)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise ModelRejectedError("not an ONNX model") from exc
    return OnnxModule(data, export_batch=export_batch)
