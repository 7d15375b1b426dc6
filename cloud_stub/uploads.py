"""Checks on uploaded models before they are stored: ONNX only, well formed, fit for the claimed task.

An upload is parsed as an ONNX protobuf and nothing else: no pickle, no code, and no
external-data references (which would make the server read files of its choosing).
"""

from __future__ import annotations

from typing import Any

import onnx
from google.protobuf.message import DecodeError

from cloud_stub.errors import ModelRejectedError
from cloud_stub.verification.tasks import MODEL_TASKS

__all__ = ["check_onnx_model"]


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def check_onnx_model(data: bytes, *, task: str) -> dict[str, Any]:
    """Parse and check an uploaded ONNX classifier; return its summary.

    Args:
        data: The uploaded bytes.
        task: Claimed task, a key of :data:`MODEL_TASKS`.

    Returns:
        Inputs, outputs, opset, operator types and parameter count.

    Raises:
        ModelRejectedError: Not ONNX, fails ``onnx.checker``, uses external data, or
            its input/output shapes do not fit the task.

    Example:
        >>> check_onnx_model(b"not a model", task="orl-pose")
        Traceback (most recent call last):
        ...
        cloud_stub.errors.ModelRejectedError: not an ONNX model: the bytes do not parse as an ONNX protobuf
    """
    if task not in MODEL_TASKS:
        raise ModelRejectedError(f"unknown task {task!r}; choose one of {', '.join(MODEL_TASKS)}")
    spec = MODEL_TASKS[task]
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelRejectedError("not an ONNX model: the bytes do not parse as an ONNX protobuf") from exc
    if not model.graph.node or not model.opset_import:
        # An arbitrary byte string can parse as an (almost) empty protobuf.
        raise ModelRejectedError("not an ONNX model: the bytes do not parse as an ONNX protobuf")
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelRejectedError(f"initializer {tensor.name!r} uses external data; upload one self-contained file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRejectedError(f"onnx.checker refused the model: {first_line}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not model.graph.output:
        raise ModelRejectedError(f"a classifier needs one input and an output; got {len(inputs)} input(s)")
    in_dims, out_dims = _dims(inputs[0]), _dims(model.graph.output[0])
    item = in_dims[1:]
    if len(item) != len(spec.input_shape) or any(
        isinstance(d, int) and d != e for d, e in zip(item, spec.input_shape, strict=True)
    ):
        raise ModelRejectedError(
            f"input {inputs[0].name!r} has shape {in_dims}; task {task!r} needs (batch, "
            f"{', '.join(map(str, spec.input_shape))})"
        )
    if not out_dims or (isinstance(out_dims[-1], int) and out_dims[-1] != spec.num_classes):
        raise ModelRejectedError(f"output has shape {out_dims}; task {task!r} has {spec.num_classes} classes")
    parameters = sum(int(onnx.numpy_helper.to_array(t).size) for t in model.graph.initializer)
    return {
        "input": {"name": inputs[0].name, "shape": in_dims},
        "output": {"name": model.graph.output[0].name, "shape": out_dims},
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "operators": sorted({n.op_type for n in model.graph.node}),
        "parameters": parameters,
    }
