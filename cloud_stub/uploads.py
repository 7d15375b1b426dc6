"""Checks on uploaded models before they are stored: ONNX only, well formed, runnable on the claimed task.

An upload is parsed as an ONNX protobuf and nothing else: no pickle, no code, and no
external-data references (which would make the server read files of its choosing).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from cloud_stub.errors import ModelRejectedError
from cloud_stub.store.verification_datasets import VerificationDatasetStore
from cloud_stub.verification.operator_data import operator_task, read_npz
from cloud_stub.verification.runtime import (
    PROBE_IMAGES,
    ModelConventions,
    TrainableCopy,
    inspect_classifier,
    trainable_copy,
)
from cloud_stub.verification.tasks import ModelTask, resolve_task
from edge_sdk.errors import EdgeSDKError

__all__ = [
    "DATASET_TASK_PREFIX",
    "MAX_NODES",
    "MAX_TENSOR_VALUES",
    "CheckedUpload",
    "UploadTask",
    "check_onnx_model",
    "check_upload",
    "check_upload_job",
]

_log = logging.getLogger(__name__)

DATASET_TASK_PREFIX = "dataset:"  # an upload's task when it is verified on an operator's registered dataset


@dataclass(frozen=True)
class UploadTask:
    """The task an upload is verified on, as plain data a worker process can receive.

    Attributes:
        name: A built-in task, or ``dataset:ID`` for a registered verification dataset.
        dataset: That dataset's ``.npz`` bytes (``None`` for a built-in task).
    """

    name: str
    dataset: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_store(cls, name: str, datasets: VerificationDatasetStore) -> UploadTask:
        """Read the registered dataset an upload's task names, if it names one.

        Raises:
            NotFoundError: No such dataset.
        """
        if not name.startswith(DATASET_TASK_PREFIX):
            return cls(name)
        return cls(name, datasets.verification_dataset_payload(int(name.removeprefix(DATASET_TASK_PREFIX))))

    def resolve(self) -> ModelTask:
        """The task itself.

        Raises:
            TaskDataError: Unknown task, or the built-in task's data is not installed.
            OperatorDataError: The dataset no longer reads.
        """
        if self.dataset is None:
            return resolve_task(self.name)
        dataset = f"dataset {self.name.removeprefix(DATASET_TASK_PREFIX)}"
        images, labels = read_npz(self.dataset, what=dataset)
        return operator_task(images, labels, source=f"verification {dataset}")


def check_upload_job(data: bytes, task: UploadTask, threads: int = 1) -> dict[str, Any]:
    """:func:`check_onnx_model` on an :class:`UploadTask`: what the service runs in a worker process.

    An error the check does not foresee (one of a library it calls) refuses the model
    with the error's type and message, and is logged with its traceback: a model that
    breaks the check is not one the verifier can run, and the uploader gets a 422, not a 500.

    Raises:
        ModelRejectedError: As :func:`check_upload`, or the check failed on the model.
        TaskDataError: The task's data is not installed.
        MemoryError: The check ran out of memory (the worker's limit).
    """
    spec = task.resolve()
    try:
        return check_onnx_model(data, task=spec, threads=threads)
    except (EdgeSDKError, MemoryError):
        raise
    except Exception as exc:
        _log.exception("the upload check failed on a model")
        raise ModelRejectedError(f"the upload check failed on this model: {type(exc).__name__}: {exc}") from exc


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


MAX_NODES = 5000
MAX_TENSOR_VALUES = 1 << 27  # in any one tensor of the probe run: 512 MiB of float32
CONTROL_FLOW = frozenset({"Loop", "If", "Scan", "SequenceMap"})
_SUBGRAPH = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _graphs(graph: onnx.GraphProto, where: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    """The graph and every sub-graph its nodes hold, each with where it sits (for error messages)."""
    yield where, graph
    for node in graph.node:
        at = f"{where}node {node.name or node.op_type!r} attribute sub-graph "
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _graphs(sub, at)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every dense tensor a graph holds, sub-graphs included: initializers and node attributes."""
    for where, sub in _graphs(graph):
        yield from ((f"{where}initializer", t) for t in sub.initializer)
        for node in sub.node:
            at = f"{where}node {node.name or node.op_type!r} attribute"
            for attribute in node.attribute:
                tensors = [attribute.t] if attribute.type == onnx.AttributeProto.TENSOR else attribute.tensors
                yield from ((at, t) for t in tensors)


def _has_sparse_tensors(graph: onnx.GraphProto) -> bool:
    """Whether a graph or a sub-graph holds a sparse initializer or a sparse tensor attribute."""
    sparse = (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS)
    return any(
        sub.sparse_initializer or any(a.type in sparse for n in sub.node for a in n.attribute)
        for _, sub in _graphs(graph)
    )


def _check_self_contained(model: onnx.ModelProto) -> None:
    """No tensor may name external data: the server would read a file of the uploader's choosing into the model."""
    if model.training_info:  # graphs of their own, with tensors; no inference export writes them
        raise ModelRejectedError("the model carries training information (training_info); export it for inference")
    if _has_sparse_tensors(model.graph):
        # Their values and indices are tensors too; no exporter writes them for a classifier.
        raise ModelRejectedError("the model holds sparse tensors; store its weights and constants as dense tensors")
    for where, tensor in _graph_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ModelRejectedError(f"{where} {tensor.name!r} uses external data; upload one self-contained file")


def _check_tensors(model: onnx.ModelProto) -> None:
    """Every weight and constant must read as an array: a known element type and data of its declared size."""
    for where, tensor in _graph_tensors(model.graph):
        try:
            onnx.numpy_helper.to_array(tensor)
        except (KeyError, ValueError, TypeError, IndexError, NotImplementedError) as exc:
            raise ModelRejectedError(
                f"{where} {tensor.name!r} does not read as an array ({type(exc).__name__}: {exc})"
            ) from exc


def _check_static_limits(model: onnx.ModelProto, input_name: str, task: ModelTask) -> None:
    """Refuse, before anything runs, what a classifier does not need and a hostile file would use.

    Control flow and sub-graphs (a loop can run forever), local functions, more than
    :data:`MAX_NODES` nodes, and any tensor that shape inference (with the probe batch
    and constants propagated) says would hold more than :data:`MAX_TENSOR_VALUES`
    values. What inference cannot size is left to the run's own limits.
    """
    graph = model.graph
    if len(graph.node) > MAX_NODES:
        raise ModelRejectedError(f"{len(graph.node)} nodes is over the {MAX_NODES} a classifier upload may have")
    for node in graph.node:
        if node.op_type in CONTROL_FLOW or any(a.type in _SUBGRAPH for a in node.attribute):
            raise ModelRejectedError(f"node {node.name or node.output[0]!r} ({node.op_type}) holds control flow")
    if model.functions:
        raise ModelRejectedError("the model defines local functions; export it without them")
    declared = [
        d.dim_value if d.dim_value > 0 else None
        for d in next(i for i in graph.input if i.name == input_name).type.tensor_type.shape.dim
    ]
    channels, height, width = task.input_shape
    for item in {(channels, height, width), (height, width, channels)}:
        if len(declared) != 4 or any(d is not None and d != e for d, e in zip(declared[1:], item, strict=True)):
            continue
        sized = onnx.ModelProto()
        sized.CopyFrom(model)
        dims = next(i for i in sized.graph.input if i.name == input_name).type.tensor_type.shape.dim
        for dim, value in zip(dims, [declared[0] or PROBE_IMAGES, *item], strict=True):
            dim.Clear()
            dim.dim_value = value
        try:
            inferred = onnx.shape_inference.infer_shapes(sized, data_prop=True)
        except Exception:  # inconsistent shapes: onnxruntime will say so in words at the probe run
            continue
        for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            shape = info.type.tensor_type.shape.dim
            if shape and all(d.HasField("dim_value") for d in shape):
                values = math.prod(d.dim_value for d in shape)
                if values > MAX_TENSOR_VALUES:
                    raise ModelRejectedError(
                        f"tensor {info.name!r} would hold {values} values on a batch of "
                        f"{declared[0] or PROBE_IMAGES} (limit {MAX_TENSOR_VALUES})"
                    )


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed the checks: its stored summary, its conventions and its trainable copy."""

    summary: dict[str, Any]
    conventions: ModelConventions
    copy: TrainableCopy


def check_upload(data: bytes, *, task: str | ModelTask, threads: int = 1) -> CheckedUpload:
    """Parse and check an uploaded ONNX classifier, run it on task images; return its summary.

    A model this accepts is one the verifier can finish: it parses, passes
    ``onnx.checker``, carries no external data (in any tensor), no sparse tensors, no
    control flow and no tensor beyond :data:`MAX_TENSOR_VALUES` values that shape
    inference can see, runs in onnxruntime on a probe batch of the task's images and on
    a batch of another size with the conventions :func:`inspect_classifier` finds
    (layout, fixed batch, output kind, input range), scores each image on its own and
    returns one finite score per class.
    Whether the fine-tune signal can be computed (the graph converts to torch and agrees
    with onnxruntime) is reported, not required: the verdict needs only the outputs.

    Args:
        data: The uploaded bytes.
        task: Claimed task: a key of :data:`MODEL_TASKS` or an operator's :class:`ModelTask`.
        threads: onnxruntime threads of the probe run.

    Returns:
        The summary stored with the upload (inputs, outputs, opset, operator types,
        parameter count, the conventions found and the probe batch's accuracy per
        convention tried, and ``fine_tune``: ``"available"`` or why not), with the
        conventions and the trainable copy the verifier goes on to use.

    Raises:
        ModelRejectedError: Not ONNX, fails ``onnx.checker``, uses external data, or does
            not run on the task's images (the reason says which and how to fix it).
        TaskDataError: The task's data is not installed.

    Example:
        >>> check_upload(b"not a model", task="orl-pose")
        Traceback (most recent call last):
        ...
        cloud_stub.errors.ModelRejectedError: not an ONNX model: the bytes do not parse as an ONNX protobuf
    """
    spec = resolve_task(task)
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelRejectedError("not an ONNX model: the bytes do not parse as an ONNX protobuf") from exc
    if not model.graph.node or not model.opset_import:
        # An arbitrary byte string can parse as an (almost) empty protobuf.
        raise ModelRejectedError("not an ONNX model: the bytes do not parse as an ONNX protobuf")
    _check_self_contained(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:  # names that are not UTF-8: UnicodeDecodeError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRejectedError(f"onnx.checker refused the model: {first_line}") from exc
    _check_tensors(model)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not model.graph.output:
        raise ModelRejectedError(f"a classifier needs one input and an output; got {len(inputs)} input(s)")
    _check_static_limits(model, inputs[0].name, spec)
    task_data = spec.loader()
    inspection = inspect_classifier(
        data, task=spec, images=task_data.test_images, labels=task_data.test_labels, threads=threads
    )
    copy = trainable_copy(data, inspection.conventions, task_data.test_images)
    parameters = sum(int(onnx.numpy_helper.to_array(t).size) for t in model.graph.initializer)
    summary = {
        "input": {"name": inputs[0].name, "shape": _dims(inputs[0])},
        "output": {"name": model.graph.output[0].name, "shape": _dims(model.graph.output[0])},
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "operators": sorted({n.op_type for n in model.graph.node}),
        "parameters": parameters,
        **inspection.to_json(),
        "fine_tune": copy.status,
    }
    return CheckedUpload(summary, inspection.conventions, copy)


def check_onnx_model(data: bytes, *, task: str | ModelTask, threads: int = 1) -> dict[str, Any]:
    """The summary of :func:`check_upload`: what the service stores with an accepted upload.

    Raises:
        ModelRejectedError: As :func:`check_upload`.
        TaskDataError: The task's data is not installed.
    """
    return check_upload(data, task=task, threads=threads).summary
