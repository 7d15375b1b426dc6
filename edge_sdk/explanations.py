"""Attribution maps of the kit pipeline's answer, computed on the device (extra ``explain``: Captum).

An app that shows why the kit head answered (a saliency map over the face) computes it
here: :func:`explain` gives, per face, the head's predicted class and an ``(H, W)`` map
in the frame of the aligned face the kit sees. Three methods, one class each in
:data:`EXPLAINERS`:

- ``"grad"``: the input gradient of the predicted class's logit (Simonyan et al. 2014,
  the GNIME paper's "Grad"), its magnitude, the largest over colour channels;
- ``"grad-cam"``: Grad-CAM (Selvaraju et al. 2017) at the encoder's output, the layer
  whose features the device releases: ``ReLU(sum_k mean(dy/dA_k) A_k)``, upsampled
  bilinearly to the image;
- ``"integrated-gradients"``: Integrated Gradients (Sundararajan et al. 2017) from a
  black image, 32 steps, the magnitude of the channel sum.

:func:`explain_onnx` explains any ONNX classifier (a verified upload, a model the device
runs) from its outputs alone: occlusion maps (Zeiler and Fergus 2014) under onnxruntime.

An explanation computed on the raw image leaks the image: with the prediction, an
inversion network reconstructs faces better than from the prediction alone
(``../shared/papers/gnime-inversion-resistant-explanations.md``). Treat maps as
private as the picture itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import EdgeSDKError, TensorShapeError
from edge_sdk.extras import require_extra
from edge_sdk.kit.kit import Kit
from edge_sdk.validation import check_batch

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "Explanation",
    "Grad",
    "GradCAM",
    "IntegratedGradientsMap",
    "KitClassifier",
    "OnnxInput",
    "explain",
    "explain_onnx",
    "read_onnx_input",
]


class KitClassifier(nn.Module):
    """The kit pipeline as one classifier: image ``(B, C, S, S)`` to the head's logits ``(B, K)``.

    Raises:
        KitError: The kit has no head (checked by :func:`explain`).
    """

    def __init__(self, kit: Kit) -> None:
        super().__init__()
        assert kit.head is not None
        self.encoder, self.head = kit.encoder, kit.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


class Explainer(ABC):
    """One attribution method: a map ``(N, H, W)`` per image, for a given class per image."""

    name: ClassVar[str]

    @abstractmethod
    def attribute(self, model: KitClassifier, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, H, W)``, non-negative, for ``images`` ``(N, C, H, W)`` and classes ``target`` ``(N,)``."""


class Grad(Explainer):
    """``max_c |d logit_target / d x_c|``: the input gradient's magnitude (Captum's ``Saliency``)."""

    name = "grad"

    def attribute(self, model: KitClassifier, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from captum.attr import Saliency

        gradient = Saliency(model).attribute(images, target=target, abs=True)
        return gradient.amax(dim=1)


class GradCAM(Explainer):
    """Grad-CAM at the encoder's output, upsampled bilinearly to the image (Captum's ``LayerGradCam``)."""

    name = "grad-cam"

    def attribute(self, model: KitClassifier, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        cam = LayerGradCam(model, model.encoder).attribute(images, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")[:, 0]


class IntegratedGradientsMap(Explainer):
    """``|sum_c IG_c(x)|`` from a black image (Captum's ``IntegratedGradients``, Gauss-Legendre, ``steps``).

    Args:
        black: The model-space value of a black pixel (the kit's ``ImageSpec``).
        steps: Points of the path integral.
    """

    name = "integrated-gradients"

    def __init__(self, *, black: float, steps: int = 32) -> None:
        self.black, self.steps = black, steps

    def attribute(self, model: KitClassifier, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from captum.attr import IntegratedGradients

        baseline = torch.full_like(images, self.black)
        attribution = IntegratedGradients(model).attribute(
            images, baselines=baseline, target=target, n_steps=self.steps
        )
        return attribution.sum(dim=1).abs()


EXPLAINERS: dict[str, type[Explainer]] = {
    Grad.name: Grad,
    GradCAM.name: GradCAM,
    IntegratedGradientsMap.name: IntegratedGradientsMap,
}
"""Attribution methods by name (``edge-sdk explain --method``)."""


@dataclass
class Explanation:
    """Attribution maps and the answers they explain.

    Attributes:
        maps: ``(N, H, W)`` float32, non-negative, in the frame of the kit's input
            image (the aligned face); larger means more influence on the answer.
        predicted: ``(N,)`` the kit head's class for each face (the class explained).
        probabilities: ``(N, K)`` the head's class probabilities.
        method: The attribution method's name.
    """

    maps: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor
    method: str


def _explainer(method: str, kit: Kit) -> Explainer:
    if method not in EXPLAINERS:
        raise ValueError(f"method must be one of {', '.join(map(repr, EXPLAINERS))}, got {method!r}")
    if method == IntegratedGradientsMap.name:
        spec = kit.spec
        return IntegratedGradientsMap(black=(0.0 - spec.mean) / spec.std)
    return EXPLAINERS[method]()


def explain(kit: Kit, images: torch.Tensor, *, method: str = "grad", batch_size: int = 32) -> Explanation:
    """Explain the kit head's answer for each image with an attribution map.

    Args:
        kit: A kit with a head (the classifier explained is ``head(encoder(x))``).
        images: ``(N, C, S, S)`` preprocessed images, as the kit takes them.
        method: A key of :data:`EXPLAINERS`.
        batch_size: Images attributed together.

    Returns:
        The maps, in the images' frame, and the predicted classes they explain.

    Raises:
        MissingExtraError: Captum is not installed (extra ``explain``).
        KitError: The kit has no head.
        TensorShapeError: ``images`` do not have the kit's image shape.
        NonFiniteError: ``images`` hold NaN or infinity.
        ValueError: Unknown ``method`` or ``batch_size`` below 1.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> from edge_sdk.data.orl import load_orl
        >>> kit = load_kit()
        >>> result = explain(kit, load_orl("private-test").images[:2], method="grad-cam")
        >>> tuple(result.maps.shape), bool((result.maps >= 0).all())
        ((2, 64, 64), True)
    """
    from edge_sdk.errors import KitError

    require_extra("explain", feature="explanations")
    if kit.head is None:
        raise KitError(f"kit {kit.manifest.name!r} has no head: there is no answer to explain")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = check_batch(images, kit.architecture.image_shape, name="images")
    explainer = _explainer(method, kit)
    model = KitClassifier(kit).eval()
    maps, predicted, probabilities = [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(kit.device)
        with torch.no_grad():
            p = model(batch).softmax(dim=1)
        target = p.argmax(dim=1)
        with _frozen(model):
            maps.append(explainer.attribute(model, batch.clone().requires_grad_(True), target).detach().cpu())
        predicted.append(target.cpu())
        probabilities.append(p.cpu())
    return Explanation(
        maps=torch.cat(maps).float(),
        predicted=torch.cat(predicted),
        probabilities=torch.cat(probabilities),
        method=method,
    )


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Freeze the model's weights while attributing (no gradient accumulates in them), restoring after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class OnnxInput:
    """What an ONNX classifier's one input takes, read from its graph (``None``: the graph leaves it open).

    Attributes:
        channels: Colour channels.
        height: Image height, in pixels.
        width: Image width, in pixels.
        channels_last: ``True`` for ``(B, H, W, C)`` (Keras style), ``False`` for ``(B, C, H, W)``.
        batch: The batch size the graph fixes.
    """

    channels: int | None
    height: int | None
    width: int | None
    channels_last: bool
    batch: int | None

    @property
    def side(self) -> int | None:
        """The side of a square input both of whose sides the graph fixes, else ``None``."""
        return self.height if self.height is not None and self.height == self.width else None


def open_onnx_classifier(model: str | Path | bytes, *, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session of an ONNX classifier, to explain many batches with one load.

    Args:
        model: The ONNX file (with its external data beside it, if any) or its bytes.
        threads: onnxruntime intra-op threads.

    Raises:
        EdgeSDKError: onnxruntime cannot load the model.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise EdgeSDKError(f"onnxruntime cannot load the classifier: {exc}") from exc


def _fixed(dimension: object) -> int | None:
    return dimension if isinstance(dimension, int) and dimension > 0 else None


def read_onnx_input(model: str | Path | bytes | ort.InferenceSession) -> OnnxInput:
    """Read the image layout an ONNX classifier takes from its graph's input shape.

    A fourth dimension of 1 or 3 after a second that is neither is read as channels
    last; every other rank-4 input as channels first (ONNX's own layout).

    Args:
        model: The ONNX file, its bytes, or a session of :func:`open_onnx_classifier`.

    Returns:
        Channels, height, width, layout and fixed batch size of the one input.

    Raises:
        EdgeSDKError: onnxruntime cannot load the file, or the graph does not take one
            rank-4 image batch.
    """
    session = open_onnx_classifier(model) if isinstance(model, str | Path | bytes) else model
    inputs = session.get_inputs()
    shape = [_fixed(d) for d in inputs[0].shape] if len(inputs) == 1 else []
    if len(shape) != 4:
        got = [list(i.shape) for i in inputs]
        raise EdgeSDKError(f"need one image input (B, C, H, W) or (B, H, W, C); the graph takes {got}")
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    height, width = shape[1:3] if channels_last else shape[2:4]
    return OnnxInput(
        channels=shape[3] if channels_last else shape[1],
        height=height,
        width=width,
        channels_last=channels_last,
        batch=shape[0],
    )


def _check_images(images: torch.Tensor, graph: OnnxInput) -> None:
    """Refuse images whose channels, height or width differ from what the graph fixes."""
    expected = (graph.channels, graph.height, graph.width)
    if any(want is not None and want != got for want, got in zip(expected, images.shape[1:], strict=True)):
        fixed = tuple("any" if want is None else want for want in expected)
        raise TensorShapeError(f"the classifier takes images (C, H, W) = {fixed}, got {tuple(images.shape[1:])}")


def _run_in_batches(session: ort.InferenceSession, graph: OnnxInput, images: torch.Tensor) -> torch.Tensor:
    """The classifier's first output for ``images`` ``(N, C, H, W)``: transposed and padded as the graph needs."""
    x = images.permute(0, 2, 3, 1) if graph.channels_last else images
    array = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
    step = graph.batch or len(array)
    name = session.get_inputs()[0].name
    outputs = []
    try:
        for start in range(0, len(array), step):
            chunk = array[start : start + step]
            short = step - len(chunk)  # a graph with its batch baked in gets the last chunk padded
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)]) if short else chunk
            outputs.append(session.run(None, {name: padded})[0][: len(chunk)])
    except Exception as exc:  # onnxruntime's own exception types
        raise EdgeSDKError(f"onnxruntime cannot run the classifier: {exc}") from exc
    scores = np.concatenate(outputs)
    if scores.ndim != 2:
        raise EdgeSDKError(f"the classifier's first output must be scores (B, K), got shape {scores.shape}")
    return torch.from_numpy(scores).float()


def explain_onnx(
    model: str | Path | bytes | ort.InferenceSession,
    images: torch.Tensor,
    *,
    window: int = 4,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 32,
    threads: int = 1,
) -> Explanation:
    """Occlusion maps of any ONNX classifier's answer, from its outputs alone (Captum's ``Occlusion``).

    Each ``window x window`` square of the image (every channel) is set to ``baseline``
    in turn, sliding by ``stride``; a pixel's attribution is the mean change of the
    predicted class's output over the squares that cover it (Zeiler and Fergus 2014),
    and the map is its magnitude. Needs no gradient, so it runs on what onnxruntime
    runs; a graph with a fixed batch size is fed that many images at a time (the last
    few padded), and one that takes channels-last images ``(B, H, W, C)`` gets them
    transposed (:func:`read_onnx_input`).

    Args:
        model: The ONNX file, its bytes, or a session of :func:`open_onnx_classifier`
            (load once, explain many batches); one image input, one output ``(B, K)``
            (logits or probabilities).
        images: ``(N, C, H, W)`` float32 (channels first whatever the graph's layout),
            in the range the model takes.
        window: Side of the occluded square, in pixels.
        stride: Pixels between squares; ``window`` (no overlap) if ``None``.
        baseline: The value occluded pixels take.
        batch_size: Images explained together.
        threads: onnxruntime intra-op threads when ``model`` is not a session.

    Returns:
        Maps ``(N, H, W)``, the predicted classes (argmax of the outputs) and the
        outputs as probabilities (softmax unless they already are), method ``"occlusion"``.

    Raises:
        MissingExtraError: Captum is not installed (extra ``explain``).
        EdgeSDKError: onnxruntime cannot load or run the model, or the graph does not
            take one rank-4 image batch (:func:`read_onnx_input`).
        TensorShapeError: ``images`` are not a batch ``(N, C, H, W)``, or not of the
            channels, height or width the graph fixes.
        NonFiniteError: ``images`` hold NaN or infinity.
        ValueError: ``window``, ``stride`` or ``batch_size`` below 1, or ``window`` above the image.
    """
    require_extra("explain", feature="explanations")
    from captum.attr import Occlusion

    if images.dim() != 4:
        raise TensorShapeError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    images = check_batch(images, tuple(images.shape[1:]), name="images")
    stride = window if stride is None else stride
    if min(window, stride, batch_size) < 1 or window > min(images.shape[-2:]):
        raise ValueError(f"need 1 <= window <= image side, stride >= 1, batch_size >= 1; got {window}, {stride}")
    session = open_onnx_classifier(model, threads=threads) if isinstance(model, str | Path | bytes) else model
    graph = read_onnx_input(session)
    _check_images(images, graph)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return _run_in_batches(session, graph, x)

    channels = images.shape[1]
    maps, predicted, probabilities = [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        outputs = forward(batch)
        summed = outputs.sum(dim=1)
        is_probability = bool(((outputs >= 0) & (outputs <= 1)).all()) and torch.allclose(
            summed, torch.ones_like(summed), atol=1e-3
        )
        target = outputs.argmax(dim=1)
        attribution = Occlusion(forward).attribute(
            batch,
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=baseline,
            target=target,
            perturbations_per_eval=16,
        )
        maps.append(attribution.mean(dim=1).abs())  # every channel of a pixel holds the same drop
        predicted.append(target)
        probabilities.append(outputs if is_probability else outputs.softmax(dim=1))
    return Explanation(
        maps=torch.cat(maps).float(),
        predicted=torch.cat(predicted),
        probabilities=torch.cat(probabilities),
        method="occlusion",
    )
