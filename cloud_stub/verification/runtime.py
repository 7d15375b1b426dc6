"""Run an uploaded ONNX classifier in onnxruntime, whatever conventions its exporter chose.

Exporters differ in what a classifier takes and returns: ``torch.onnx.export`` with
dynamo and no dynamic shapes bakes the example's batch size into the graph, Keras and
tf2onnx write channels-last inputs, some models end in a Softmax, some expect pixels
in ``[0, 255]``. :func:`inspect_classifier` finds out on a probe batch of task images
(once, when the model is uploaded), refusing with a reason anything onnxruntime cannot
run; :class:`OnnxClassifier` then gives the verifier the one view it works with:
images ``(N, C, S, S)`` in ``[0, 1]`` -> logits ``(N, classes)`` (log-probabilities for
a model that returns probabilities).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cloud_stub.errors import ModelRejectedError
from cloud_stub.verification.detector import untrainable_reason
from cloud_stub.verification.onnx_torch import OnnxModule, onnx_to_torch, training_mode_nodes
from cloud_stub.verification.tasks import ModelTask
from edge_sdk.sessions import cpu_session

__all__ = [
    "INPUT_RANGES",
    "ConventionAdapter",
    "Inspection",
    "ModelConventions",
    "OnnxClassifier",
    "TrainableCopy",
    "inspect_classifier",
    "run_in_batches",
    "session_runner",
    "trainable_copy",
]

# Pixel ranges a model may expect, as (scale, offset) applied to [0, 1] images.
INPUT_RANGES: dict[str, tuple[float, float]] = {"[0, 1]": (1.0, 0.0), "[0, 255]": (255.0, 0.0), "[-1, 1]": (2.0, -1.0)}
PROBE_IMAGES = 64  # labelled task images the conventions are decided on
# A second, prime batch size every accepted graph is run on at upload: a graph that runs
# only the probe's size (a Reshape to 64 or to groups of 16) is found there, not later,
# and so is one whose scores for an image depend on the other images in its batch.
ODD_BATCH = 7
MAX_BATCH = 256  # items per onnxruntime call for dynamic-batch graphs
_PROBABILITY_TOLERANCE = 1e-3
_RANGE_MARGIN = 0.1  # accuracy a non-[0, 1] range must gain on the probe batch to be chosen


@dataclass(frozen=True)
class ModelConventions:
    """How a graph takes images and what it returns; the verifier adapts to it.

    Attributes:
        layout: ``"channels-first"`` (``(N, C, H, W)``) or ``"channels-last"`` (``(N, H, W, C)``).
        batch: The batch size the graph runs (fixed by its export), or ``None`` for any.
        outputs: ``"logits"``, ``"probabilities"`` (the verifier takes their log) or
            ``"log-probabilities"``.
        input_range: The pixel range the model is fed, a key of :data:`INPUT_RANGES`.
        notes: What was assumed or found, in words, for the report.
    """

    layout: str = "channels-first"
    batch: int | None = None
    outputs: str = "logits"
    input_range: str = "[0, 1]"
    notes: tuple[str, ...] = ()

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S)`` images in ``[0, 1]`` -> what the graph takes."""
        scale, offset = INPUT_RANGES[self.input_range]
        x = images * scale + offset if (scale, offset) != (1.0, 0.0) else images
        return x.permute(0, 2, 3, 1) if self.layout == "channels-last" else x

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """The graph's outputs ``(N, classes, ...)`` -> logits ``(N, classes)``."""
        outputs = outputs.reshape(len(outputs), -1)
        if self.outputs == "probabilities":
            # Confident models round probabilities to 0 in float32; the floor keeps logs finite.
            return torch.log(outputs.clamp_min(1e-30))
        return outputs

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "notes": list(self.notes)}


def run_in_batches(
    run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, batch: int | None
) -> torch.Tensor:
    """Apply ``run`` to ``images`` in chunks: exactly ``batch`` items per call for a fixed-batch graph.

    The last chunk of a fixed-batch graph is filled up with copies of its last image and
    the extra outputs dropped, so every call has the shape the graph was exported with.
    Gradients flow through (the verifier fine-tunes fixed-batch graphs this way too).

    Example:
        >>> run_in_batches(lambda x: x * 2, torch.arange(5.0).reshape(5, 1), batch=2).flatten().tolist()
        [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    size = batch or MAX_BATCH
    outputs = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        if batch is not None and len(chunk) < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - len(chunk), *chunk.shape[1:])])
        outputs.append(run(chunk)[: len(images) - start])
    return torch.cat(outputs)


_ORT_ALLOCATION_FAILURE = "Failed to allocate memory"  # onnxruntime's arena, in its error messages


def session_runner(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """One onnxruntime call on what the graph takes: a tensor in, its first output as float32 out.

    An allocation that fails (under the worker's memory limit) is raised as ``MemoryError``,
    so it is never mistaken for a graph the batch does not fit.
    """
    name = session.get_inputs()[0].name
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failed run is raised with its message; the trial batches may fail by design

    def run(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        try:
            outputs = session.run(None, {name: array}, quiet)
        except Exception as exc:  # onnxruntime's Fail/RuntimeException have no common public base class
            if _ORT_ALLOCATION_FAILURE in str(exc):
                raise MemoryError("onnxruntime could not allocate memory for the graph's tensors") from exc
            raise
        return torch.from_numpy(np.asarray(outputs[0], dtype=np.float32))

    return run


class OnnxClassifier:
    """An uploaded classifier run by onnxruntime: images ``(N, C, S, S)`` in ``[0, 1]`` -> logits.

    Args:
        data: The ONNX file's bytes.
        conventions: From :func:`inspect_classifier`.
        threads: onnxruntime intra-op threads.
    """

    def __init__(self, data: bytes, conventions: ModelConventions, *, threads: int = 1) -> None:
        self.session = cpu_session(data, threads=threads)
        self.conventions = conventions
        self._run = session_runner(self.session)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        outputs = run_in_batches(self._run, self.conventions.model_input(images), batch=self.conventions.batch)
        return self.conventions.logits(outputs)


@dataclass
class Inspection:
    """What :func:`inspect_classifier` found: the conventions and the probe batch's evidence."""

    conventions: ModelConventions
    probe_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "conventions": self.conventions.to_json(),
            "probe_accuracy": self.probe_accuracy,
            "seconds": round(self.seconds, 4),
        }


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    """Declared dimensions; unknown, symbolic and non-positive ones (``-1``) are ``None``."""
    return [d.dim_value if d.dim_value > 0 else None for d in value_info.type.tensor_type.shape.dim]


def _layouts(dims: list[int | None], item: tuple[int, int, int]) -> list[str]:
    """Layouts whose item shape agrees with the input's declared dimensions (unknown ones agree)."""
    channels, height, width = item
    candidates = {"channels-first": (channels, height, width), "channels-last": (height, width, channels)}
    found = [
        name
        for name, shape in candidates.items()
        if len(dims) == 4 and all(d is None or d == e for d, e in zip(dims[1:], shape, strict=True))
    ]
    if candidates["channels-first"] == candidates["channels-last"]:
        return found[:1]
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _output_kind(outputs: np.ndarray, last_op: str) -> str:
    rows = outputs.reshape(len(outputs), -1).astype(np.float64)
    if last_op == "LogSoftmax" or (
        (rows <= _PROBABILITY_TOLERANCE).all() and np.allclose(np.exp(rows).sum(1), 1, atol=_PROBABILITY_TOLERANCE)
    ):
        return "log-probabilities"
    if last_op == "Softmax" or (
        (rows >= 0).all() and (rows <= 1).all() and np.allclose(rows.sum(1), 1, atol=_PROBABILITY_TOLERANCE)
    ):
        return "probabilities"
    return "logits"


def _last_op(model: onnx.ModelProto) -> str:
    """The operator that makes the graph's output, looking through Identity, Reshape, Flatten and Squeeze."""
    producers = {out: node for node in model.graph.node for out in node.output}
    name = model.graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type not in ("Identity", "Reshape", "Flatten", "Squeeze"):
            return node.op_type
        name = node.input[0]
    return ""


def _run_probe(session: Any, x: torch.Tensor, batch: int | None, classes: int) -> tuple[np.ndarray | None, str]:
    """Outputs ``(N, classes)`` of the graph on ``x`` in the given batch size, or why it failed."""
    try:
        outputs = run_in_batches(session_runner(session), x, batch=batch).numpy()
    except MemoryError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
        return None, f"onnxruntime cannot run it on a batch of {batch or len(x)}: {_first_line(exc)}"
    if outputs.shape[0] != len(x) or outputs.reshape(len(x), -1).shape[1] != classes:
        return None, f"it returns shape {list(outputs.shape)} for {len(x)} images; the task has {classes} classes"
    if not np.isfinite(outputs).all():
        return None, "it returns NaN or infinite values on task images"
    return outputs, ""


class _Trial:
    """Runs the probe batch under each convention, keeping outputs, accuracies and failures."""

    def __init__(self, session: Any, classes: int, *, batch: int | None) -> None:
        self.session, self.classes, self.batch = session, classes, batch
        self.outputs: dict[tuple[str, str], np.ndarray] = {}
        self.accuracy: dict[str, float] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []

    def layout(self, layout: str, x: torch.Tensor, y: torch.Tensor) -> None:
        for input_range in INPUT_RANGES:
            model_input = ModelConventions(layout=layout, input_range=input_range).model_input(x)
            outputs, why = _run_probe(self.session, model_input, self.batch, self.classes)
            if outputs is not None and self.batch is None:
                # The verifier's last chunk of a dynamic graph can hold any number of images.
                for size in (ODD_BATCH, 1):
                    _, why = _run_probe(self.session, model_input[:size], None, self.classes)
                    if why:
                        self._fixed_by_trial(model_input, outputs, why)
                        break
            elif outputs is None and self.batch is None:
                outputs = self._fixed_by_trial(model_input, None, why)
            if outputs is None:
                self.failures.append(f"{layout}: {why}")
                return  # the range does not change whether the graph runs
            self.accuracy[f"{layout}, {input_range}"] = float(
                (outputs.reshape(len(x), -1).argmax(1) == y.numpy()).mean()
            )
            self.outputs[(layout, input_range)] = outputs

    def _fixed_by_trial(self, model_input: torch.Tensor, whole: np.ndarray | None, why: str) -> np.ndarray | None:
        """A graph declaring a dynamic batch that fails on some sizes: run it by one image, or by whole probe batches.

        Returns the probe's outputs under the batch found (and sets it), or ``None``.
        """
        outputs, _ = _run_probe(self.session, model_input, 1, self.classes)
        if outputs is not None:
            self.batch = 1
            self.notes.append(f"the input declares a dynamic batch but the graph runs one image at a time ({why})")
            return outputs
        if whole is not None:  # it ran the whole probe batch: every call is padded to that size
            self.batch = len(model_input)
            self.notes.append(
                f"the input declares a dynamic batch but the graph runs only batches of {self.batch} ({why}); "
                f"it is run {self.batch} images at a time"
            )
        return whole


def _batch_dependence(session: Any, conventions: ModelConventions, x: torch.Tensor, outputs: np.ndarray) -> str:
    """Where the scores of the first images move when they are run without the others, or ``""``.

    A graph that takes any batch runs its first :data:`ODD_BATCH` images together and
    each alone (as a device runs one frame); a fixed-batch graph runs fewer images than
    its batch, filled up. Each score may move by ``1e-4`` plus ``1e-3`` of its own
    magnitude (one huge score does not widen the others' tolerance).
    """
    run = session_runner(session)
    batch = conventions.batch
    if batch == 1:
        return ""  # its batches hold nothing else
    if batch is None:
        trials = {f"{ODD_BATCH} images run together": [x[:ODD_BATCH]]}
        trials["each image run alone"] = [x[i : i + 1] for i in range(ODD_BATCH)]
    else:
        trials = {f"{min(ODD_BATCH, batch - 1)} images in a batch filled up": [x[: min(ODD_BATCH, batch - 1)]]}
    for how, chunks in trials.items():
        alone = torch.cat([run_in_batches(run, conventions.model_input(c), batch=batch) for c in chunks]).numpy()
        among = outputs[: len(alone)].reshape(len(alone), -1)
        moved = np.abs(alone.reshape(len(alone), -1) - among)
        allowed = 1e-4 + 1e-3 * np.abs(among)
        if (moved > allowed).any():
            worst = np.unravel_index(int(np.argmax(moved - allowed)), moved.shape)
            return (
                f"image {worst[0]}'s score {worst[1]} is {among[worst]:.4g} among {len(outputs)} images and "
                f"{alone.reshape(len(alone), -1)[worst]:.4g} with {how}"
            )
    return ""


def inspect_classifier(
    data: bytes, *, task: ModelTask, images: torch.Tensor, labels: torch.Tensor, threads: int = 1
) -> Inspection:
    """Decide a graph's conventions by running it on labelled task images in onnxruntime.

    Layouts come from the input's declared shape (both are tried when it does not
    tell), the batch from its first dimension (a graph that declares a dynamic batch
    but only runs one image at a time is run that way), the input range by accuracy
    on the probe batch (``[0, 1]`` unless another range is clearly better), and the
    output kind from the last operator or the values (rows of probabilities sum to 1).

    Args:
        data: The ONNX file's bytes (already parsed and checked by ``check_onnx_model``).
        task: The claimed task (item shape and classes).
        images: ``(N, C, S, S)`` task images in ``[0, 1]``; the first :data:`PROBE_IMAGES` are used.
        labels: ``(N,)`` their classes.
        threads: onnxruntime intra-op threads.

    Raises:
        ModelRejectedError: onnxruntime cannot load or run it on task images, it returns
            the wrong shape or non-finite values, or it was exported in training mode.

    Example:
        >>> import io, torch
        >>> from cloud_stub.verification.tasks import MODEL_TASKS
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Softmax(1)).eval()
        >>> buffer = io.BytesIO()
        >>> torch.onnx.export(net, (torch.rand(1, 1, 28, 28),), buffer, dynamo=False)
        >>> x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
        >>> found = inspect_classifier(buffer.getvalue(), task=MODEL_TASKS["fashion-mnist"], images=x, labels=y)
        >>> found.conventions.batch, found.conventions.outputs
        (1, 'probabilities')
    """
    start = time.perf_counter()
    model = onnx.load_model_from_string(data)
    if training_mode_nodes(model):
        raise ModelRejectedError(
            f"node(s) {', '.join(training_mode_nodes(model)[:5])} run in training mode (BatchNormalization "
            "training_mode=1 or a Dropout told to drop), so its outputs depend on the rest of the batch or on "
            "chance; export the model after model.eval()"
        )
    try:
        session = cpu_session(data, threads=threads)
    except Exception as exc:  # onnxruntime's load errors have no common public base class
        raise ModelRejectedError(f"onnxruntime cannot load the model: {_first_line(exc)}") from exc
    initializers = {t.name for t in model.graph.initializer}
    declared = next(i for i in model.graph.input if i.name not in initializers)
    dims = _dims(declared)
    layouts = _layouts(dims, task.input_shape)
    if not layouts:
        raise ModelRejectedError(
            f"input {declared.name!r} has shape {[d if d is not None else '?' for d in dims]}; task {task.name!r} "
            f"needs (batch, {', '.join(map(str, task.input_shape))}) or channels-last (batch, "
            f"{task.input_shape[1]}, {task.input_shape[2]}, {task.input_shape[0]})"
        )
    x, y = images[:PROBE_IMAGES], labels[:PROBE_IMAGES]
    fixed = dims[0] if dims and dims[0] else None
    trial = _Trial(session, task.num_classes, batch=fixed)
    for layout in layouts:
        trial.layout(layout, x, y)
    if not trial.outputs:
        raise ModelRejectedError("the model does not run on task images: " + "; ".join(trial.failures))
    best_layout, best_range = max(
        trial.outputs,
        key=lambda k: (
            trial.accuracy[f"{k[0]}, {k[1]}"] - (_RANGE_MARGIN if k[1] != "[0, 1]" else 0.0),
            k[0] == "channels-first",
        ),
    )
    notes, batch, accuracy = trial.notes, trial.batch, trial.accuracy
    if len(layouts) > 1:
        notes.append(f"the input shape fits both layouts; {best_layout} scored best on {len(x)} task images")
    if best_range != "[0, 1]":
        notes.append(f"pixels fed in {best_range}: it scored best on {len(x)} task images with that range")
    if fixed is not None:
        notes.append(f"the graph was exported for batches of exactly {fixed}; it is run {fixed} images at a time")
    outputs = trial.outputs[(best_layout, best_range)]
    found = ModelConventions(layout=best_layout, batch=batch, input_range=best_range)
    moved = _batch_dependence(session, found, x, outputs)
    if moved:
        raise ModelRejectedError(
            f"its scores for an image change with the other images in its batch ({moved}): it normalises over "
            "the batch, switches on the batch size, or was exported in training mode; a classifier must score "
            "each image on its own (export it after model.eval())"
        )
    kind = _output_kind(outputs, _last_op(model))
    if kind != "logits":
        notes.append(f"it returns {kind}; the verifier works on their logarithm")
    conventions = ModelConventions(
        layout=best_layout, batch=batch, outputs=kind, input_range=best_range, notes=tuple(notes)
    )
    return Inspection(conventions, accuracy, time.perf_counter() - start)


class ConventionAdapter(torch.nn.Module):
    """A converted graph behind its conventions: images ``(N, C, S, S)`` in ``[0, 1]`` -> logits, trainable."""

    def __init__(self, graph: OnnxModule, conventions: ModelConventions) -> None:
        super().__init__()
        self.graph: OnnxModule = graph
        self.conventions = conventions

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = run_in_batches(self.graph, self.conventions.model_input(images), batch=self.conventions.batch)
        return self.conventions.logits(outputs)


@dataclass(frozen=True)
class TrainableCopy:
    """The torch copy the fine-tune signal trains, or why there is none.

    Attributes:
        module: The copy, or ``None``.
        status: ``"available"``, or the reason the fine-tune signal cannot be computed.
    """

    module: ConventionAdapter | None
    status: str


PARITY_IMAGES = 16


def _parity_tolerance(reference: np.ndarray | torch.Tensor) -> float:
    """How far two runs of one graph's outputs may differ: 1e-4 + 1e-3 of their largest magnitude."""
    return 1e-4 + 1e-3 * float(np.abs(np.asarray(reference)).max())


def trainable_copy(data: bytes, conventions: ModelConventions, images: torch.Tensor) -> TrainableCopy:
    """Convert the graph to torch and check it computes what onnxruntime computes on task images.

    Args:
        data: The ONNX file's bytes.
        conventions: From :func:`inspect_classifier`.
        images: ``(N, C, S, S)`` task images in ``[0, 1]``; the first :data:`PARITY_IMAGES` are compared.

    Returns:
        The copy, or ``None`` with the reason: an operator the converter lacks, or outputs
        that differ from onnxruntime's by more than 1e-4 + 1e-3 of their largest magnitude.
    """
    try:
        graph = onnx_to_torch(data, export_batch=conventions.batch).eval()
    except ModelRejectedError as exc:
        return TrainableCopy(None, f"not computed: {exc}")
    raw = ModelConventions(layout=conventions.layout, batch=conventions.batch, input_range=conventions.input_range)
    x = raw.model_input(images[:PARITY_IMAGES])
    try:
        reference = run_in_batches(session_runner(cpu_session(data, threads=1)), x, batch=conventions.batch)
    except MemoryError:
        raise
    except Exception as exc:  # inspect_classifier ran this batch; a graph that still fails has no copy to check
        return TrainableCopy(None, f"not computed: onnxruntime failed on {len(x)} task images: {_first_line(exc)}")
    tolerance = _parity_tolerance(reference)
    why = ""
    # A fixed-batch graph's copy is first tried on whole batches (training it item by item is
    # slow); it must then agree on two batch sizes, or a batch baked into it would pass by chance.
    for batch in dict.fromkeys([None, conventions.batch]):
        gap, why = _copy_gap(graph, x, reference, batch=batch)
        if why:
            continue
        if gap <= tolerance:
            copy_conventions = ModelConventions(**{**asdict(conventions), "batch": batch})
            copy = ConventionAdapter(graph, copy_conventions)
            why = untrainable_reason(copy, images[:ODD_BATCH])
            return TrainableCopy(None if why else copy, why or "available")
        why = f"not computed: the torch copy differs from onnxruntime by {gap:.3g} (tolerance {tolerance:.3g})"
    return TrainableCopy(None, why)


def _copy_gap(graph: OnnxModule, x: torch.Tensor, reference: torch.Tensor, *, batch: int | None) -> tuple[float, str]:
    """The copy's largest difference from onnxruntime on ``x``, and on its first :data:`ODD_BATCH` rows run alone.

    Returns ``(gap, "")``, or ``(inf, why)`` when the copy does not run or returns another shape.
    """
    gap = 0.0
    for rows in (len(x), ODD_BATCH) if batch is None else (len(x),):
        try:
            with torch.no_grad():
                ours = run_in_batches(graph, x[:rows], batch=batch)
        except ModelRejectedError as exc:
            return math.inf, f"not computed: {exc}"
        expected = reference[:rows]
        if ours.numel() != expected.numel():
            shapes = f"{list(ours.shape)}, onnxruntime {list(expected.shape)}"
            return math.inf, f"not computed: on {rows} images the torch copy returns shape {shapes}"
        gap = max(gap, float((ours.reshape(expected.shape) - expected).abs().max()))
    return gap, ""
