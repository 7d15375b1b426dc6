"""Is an uploaded classifier vicious? Three signals and a verdict (vicious paper App. C, I.2; docs/verification.md).

1. **Fine-tune divergence** (paper App. I.2): fine-tune the model on a small labelled
   batch of the claimed task to get F+, compare F and F+ outputs on held-out images by
   mean cosine similarity C; ``v = (1 - C) / 2``, paper threshold 0.01.
2. **Output entropy** (paper App. C): a vicious model spends its outputs' entropy on
   the input; mean softmax entropy on held-out images, next to the reference's.
3. **Decoder-leakage probe**: train a decoder from the model's outputs back to the
   images of the task and measure its reconstructions on held-out images (PSNR, SSIM,
   reconstruction risk R), next to the same probe on an honest reference model the
   verifier trains itself and on the model's own predicted classes (one-hot).

The verdict uses the probe: *vicious* when its PSNR exceeds a baseline by more than
``psnr_margin_db``. The baseline (``probe_baseline``) is the honest reference's probe,
or the class-only probe: what the answer alone reveals, so the gap measures what the
outputs carry beyond it, free of the offset between the verifier's reference and the
uploader's training recipe. Signals 1 and 2 are reported, not voted: on small models
the fine-tune signal confounds under-trained with vicious (docs/verification.md), which
the benchmark (``benchmarks/vicious_detection.py``) measures again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cloud_stub.errors import NonFiniteOutputsError
from cloud_stub.verification.defences import argmax_only
from cloud_stub.verification.tasks import MODEL_TASKS, ModelTask, TaskData, resolve_task
from cloud_stub.verification.vicious import (
    ViciousConfig,
    augment_images,
    classifier_outputs,
    reconstruction_quality,
    train_output_decoder,
    train_vicious,
)
from edge_sdk.errors import OutputWriteError
from edge_sdk.fileio import write_json
from edge_sdk.metrics import MahalanobisMetric

Classifier = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "Classifier",
    "DetectorConfig",
    "VerificationReport",
    "fine_tune_divergence",
    "finite_outputs",
    "output_entropy",
    "probe_inputs",
    "untrainable_reason",
    "verify_classifier",
]


_BASELINE_WORDS = {
    "reference": "that of the verifier's honest reference model",
    "label": "that of the same probe trained on the model's predicted classes alone",
    "retrained": "that of the same graph re-initialised and trained honestly to the upload's accuracy (the more "
    "leaky of its least and most trained states there)",
}


@dataclass(frozen=True)
class DetectorConfig:
    """Budget and thresholds of a verification.

    Attributes:
        finetune_samples: Labelled images of the claimed task used to fine-tune (paper: a mini-batch).
        finetune_steps: Optimiser steps of the fine-tuning.
        finetune_batch: Images per fine-tuning step.
        finetune_lr: Adam learning rate of the fine-tuning.
        heldout_samples: Held-out images on which outputs are compared and probes scored.
        probe_samples: Task images the probe decoder trains on.
        probe_steps: Probe decoder steps.
        probe_batch: Images per probe step.
        probe_alpha: Weight of ``1 - SSIM`` in the probe's loss.
        probe_gamma: Weight of the Huber loss in the probe's loss (the verdict scores PSNR,
            which a Huber-dominated probe targets).
        probe_augment_copies: Augmented copies (shifts, contrast, brightness) of the probe's
            training images added to them, the model's outputs computed on each: on a task
            with few images the probe otherwise learns too little to tell a weak vicious
            model from an honest one.
        probe_seeds: Probes trained (seeds ``seed``, ``seed + 1``, ...; each with its own
            augmented copies) whose scores are averaged: one probe's PSNR varies by
            about 0.2 dB with its seed on ORL, as much as a weakly vicious model adds.
        probe_baseline: What the probe's PSNR is compared with: ``"reference"``, the
            verifier's honest reference model (one architecture, one recipe);
            ``"label"``, the same probes trained on the model's one-hot predicted
            classes; ``"retrained"``, the uploaded graph itself, re-initialised and
            trained honestly by the verifier until it is as accurate as the upload
            (same architecture and capacity; the reference when the graph has no
            trainable copy).
        v_threshold: Paper threshold on ``v`` (reported as a flag).
        psnr_margin_db: Probe PSNR above the baseline's that makes the verdict vicious.
        reference_epochs: Epochs of the verifier's own honest reference model.
        retrain_epochs: Most epochs (over the probe's training images) of the retrained
            copy; training stops earlier once it matches the upload's accuracy.
        retrain_batch: Images per step of the retrained copy.
        retrain_lr: Adam learning rate of the retrained copy.
        reference_margin_db: With the ``"retrained"`` baseline on a built-in task, also
            require the probe to beat the verifier's reference by this much: vicious only
            if the outputs leak more than a standard honest model's and more than the
            upload's own architecture trained honestly (an architecture that leaks by
            nature passes the second, an under-trained model the first).
        retrain_match: What the retrained copy is trained to match: the upload's
            ``"accuracy"`` or its output ``"entropy"`` on validation images.
        calibration_copies: Retrained copies (seeds ``seed + 3000``, ...): with more than
            one, the baseline is their mean and the margin grows by their PSNR spread,
            the noise of an honest model's probe on this data (operators' own tasks).
        seed: Seed of sampling, fine-tuning and probes.
    """

    finetune_samples: int = 256
    finetune_steps: int = 20
    finetune_batch: int = 64
    finetune_lr: float = 1e-3
    heldout_samples: int = 2000
    probe_samples: int = 12000
    probe_steps: int = 300
    probe_batch: int = 128
    probe_alpha: float = 1.0
    probe_gamma: float = 1.0
    probe_augment_copies: int = 0
    probe_seeds: int = 1
    probe_baseline: str = "reference"
    v_threshold: float = 0.01
    psnr_margin_db: float = 0.5
    reference_epochs: int = 2
    retrain_epochs: int = 3
    retrain_batch: int = 128
    retrain_lr: float = 1e-3
    calibration_copies: int = 1
    retrain_match: str = "accuracy"
    reference_margin_db: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.probe_baseline not in _BASELINE_WORDS:
            raise ValueError(f"probe_baseline must be one of {', '.join(_BASELINE_WORDS)}, got {self.probe_baseline!r}")
        if self.retrain_match not in ("accuracy", "entropy"):
            raise ValueError(f"retrain_match must be 'accuracy' or 'entropy', got {self.retrain_match!r}")
        if self.calibration_copies < 1:
            raise ValueError(f"calibration_copies must be at least 1, got {self.calibration_copies}")
        if self.probe_seeds < 1:
            raise ValueError(f"probe_seeds must be at least 1, got {self.probe_seeds}")

    @classmethod
    def for_task(cls, task: str, *, budget: str = "standard") -> DetectorConfig:
        """The defaults of a task (``standard``, measured by ``benchmarks/vicious_detection.py``) or ``quick``.

        ``quick`` probes Fashion-MNIST with 3,000 training and 1,000 held-out images
        (about a third of the time; the unit tests check it separates a beta_R/beta_C = 3
        model); ORL is small enough that both budgets are the same.
        """
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        return cls(**{**TASK_DEFAULTS.get(task, {}), **BUDGETS[budget].get(task, {})})

    @classmethod
    def for_data(cls, data: TaskData, *, budget: str = "standard") -> DetectorConfig:
        """Settings for an operator's own data, scaled to its size.

        Half the held-out images (at most 2,000) score the probe and a quarter (at most
        256) fine-tune; the probe trains on every training image (at most 12,000, 3,000
        with the ``quick`` budget), with ORL's small-data recipe (augmented copies,
        Huber loss, three probe seeds) under 2,000; the baseline is the upload's graph
        retrained twice, so the margin carries the spread of honest copies on this data.
        """
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        test, train = len(data.test_images), len(data.train_images)
        settings: dict[str, Any] = {
            **TASK_DEFAULTS["fashion-mnist"],
            "heldout_samples": min(2000, test // 2),
            "finetune_samples": min(256, test // 4),
            "finetune_batch": min(64, max(8, test // 8)),
            "probe_samples": min(12000 if budget == "standard" else 3000, train),
            "calibration_copies": 2,
            "probe_baseline": "retrained",
        }
        if train < 2000:
            recipe = ("probe_alpha", "probe_gamma", "probe_augment_copies", "probe_seeds", "probe_batch")
            settings.update({k: TASK_DEFAULTS["orl-pose"][k] for k in recipe})
        return cls(**settings)


# ORL has 200 public faces and 3 outputs, so a leak is worth tenths of a dB: probe on
# all the faces and 7 augmented copies with a Huber loss, average 3 probe seeds (one
# probe's PSNR moves 0.2 dB with its seed), and compare with the same probes on the
# model's predicted classes (the honest reference, trained another way than the
# uploader's model, probes 0.2-0.9 dB off honest models; the class-only baseline is the
# model's own). The margin is the largest gap of three honest models trained with the
# benchmark's recipe (0.35 dB) plus 0.1 dB.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # benchmarks/verifier_zoo.py: a fixed reference flags honest models of leakier
    # families and under-trained ones; the upload's own graph retrained to its accuracy
    # clears them (its largest gap there, 0.06 dB, + 0.1 dB), but alone it misses
    # leaks a BatchNorm-folded copy cannot tell from its own. Vicious needs both.
    "fashion-mnist": {"probe_baseline": "retrained", "psnr_margin_db": 0.16, "reference_margin_db": 0.5},
    "orl-pose": {
        "probe_samples": 200,
        "heldout_samples": 200,
        "finetune_samples": 64,
        "finetune_batch": 32,
        "probe_batch": 32,
        "probe_alpha": 0.0,
        "probe_gamma": 1.0,
        "probe_augment_copies": 7,
        "probe_seeds": 3,
        "probe_baseline": "label",
        "reference_epochs": 40,
        "psnr_margin_db": 0.45,
    },
}


BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "standard": {},
    "quick": {"fashion-mnist": {"probe_samples": 3000, "heldout_samples": 1000, "reference_epochs": 3}},
}


@dataclass
class VerificationReport:
    """What a verification measured and concluded."""

    task: str
    data: dict[str, Any]
    verdict: str
    rule: str
    accuracy: float
    v: float | None
    cosine: float | None
    v_flag: bool | None
    entropy: float
    reference_entropy: float | None
    probe: dict[str, float]
    reference_probe: dict[str, float] | None
    label_probe: dict[str, float]
    retrained_probe: dict[str, float] | None
    calibration: dict[str, Any] | None
    psnr_gap_db: float
    config: dict[str, Any]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def fine_tune_divergence(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heldout: torch.Tensor, config: DetectorConfig
) -> tuple[float, float]:
    """``(v, C)``: fine-tune a copy of ``model`` on labelled images and compare outputs on ``heldout``.

    The copy is fine-tuned in eval mode (frozen normalisation statistics, no dropout),
    the way its exported ONNX graph computes.

    Raises:
        FloatingPointError: The outputs are not finite, before or after fine-tuning.
    """
    before = classifier_outputs(model, heldout)
    if not torch.isfinite(before).all() or not torch.isfinite(classifier_outputs(model, images)).all():
        raise FloatingPointError("the outputs are NaN or infinite on task images before any fine-tuning")
    tuned = copy.deepcopy(model).eval()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.finetune_lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.finetune_steps):
        idx = torch.randint(0, len(images), (min(config.finetune_batch, len(images)),), generator=generator)
        loss = F.cross_entropy(tuned(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = classifier_outputs(tuned, heldout)
    if not torch.isfinite(after).all():
        raise FloatingPointError(f"fine-tuning at learning rate {config.finetune_lr} made the outputs non-finite")
    cosine = float(F.cosine_similarity(before, after, dim=1).mean())
    return (1 - cosine) / 2, cosine


def output_entropy(outputs: torch.Tensor) -> float:
    """Mean Shannon entropy (nats) of the softmax of ``outputs``."""
    log_p = torch.log_softmax(outputs, dim=1)
    return float(-(log_p.exp() * log_p).sum(dim=1).mean())


@dataclass(frozen=True)
class _Probe:
    quality: dict[str, float]
    entropy: float
    label_quality: dict[str, float] | None = None


def finite_outputs(model: Classifier, images: torch.Tensor, *, what: str) -> torch.Tensor:
    """:func:`classifier_outputs`, refused unless every score is finite.

    A probe trained or scored on NaN reads as no leak at all (its PSNR is NaN, and NaN
    exceeds no margin), so a model could hide from it by answering some images with NaN.

    Raises:
        NonFiniteOutputsError: Some scores are NaN or infinite (how many images, and the first).
    """
    outputs = classifier_outputs(model, images)
    bad = (~torch.isfinite(outputs.reshape(len(outputs), -1))).any(dim=1)
    if bad.any():
        raise NonFiniteOutputsError(
            f"it returns NaN or infinite scores on {int(bad.sum())} of {len(images)} {what} task images "
            f"(the first: image {int(bad.nonzero()[0])}); a classifier must score every image of its task"
        )
    return outputs


# Scores beyond this magnitude are standardised before the probe reads them. The probe's
# decoder trains on scores of any ordinary scale (logits multiplied by 1e6 read as leaky
# as the logits), but at 1e20 its first layer overflows and it learns a constant: a model
# could hide a leak by scaling its scores, which its own attacker simply divides back.
PROBE_SCALE_LIMIT = 1e4


def probe_inputs(train: torch.Tensor, heldout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores as the decoder probe reads them: unchanged, or standardised per score when any is beyond the limit.

    Args:
        train: ``(N, K)`` finite scores of the probe's training images.
        heldout: ``(M, K)`` finite scores of the held-out images it is scored on.

    Returns:
        Both as given if every magnitude is at most :data:`PROBE_SCALE_LIMIT`; else each
        of the ``K`` scores minus its mean over ``train``, divided by its standard
        deviation there (computed in float64; a constant score is centred only).

    Example:
        >>> scores = torch.tensor([[1e20, 0.0], [3e20, 1.0]])
        >>> probe_inputs(scores, scores)[0]
        tensor([[-0.7071, -0.7071],
                [ 0.7071,  0.7071]])
    """
    if max(float(train.abs().max()), float(heldout.abs().max())) <= PROBE_SCALE_LIMIT:
        return train, heldout
    wide = train.double()
    mean, std = wide.mean(dim=0), wide.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((wide - mean) / std).float(), ((heldout.double() - mean) / std).float()


def _probe(
    model: Classifier, task: ModelTask, config: DetectorConfig, metric: MahalanobisMetric, *, with_label: bool
) -> _Probe:
    data = task.loader()
    originals = data.train_images[: config.probe_samples]
    heldout = data.test_images[: config.heldout_samples]
    heldout_outputs = finite_outputs(model, heldout, what="held-out")
    scores: dict[str, list[dict[str, float]]] = {"outputs": [], "label": []}
    for seed in range(config.seed, config.seed + config.probe_seeds):
        train_x = originals
        if config.probe_augment_copies:
            generator = torch.Generator().manual_seed(seed)
            copies = [augment_images(originals, generator=generator) for _ in range(config.probe_augment_copies)]
            train_x = torch.cat([originals, *copies])
        train_outputs = finite_outputs(model, train_x, what="probe-training")
        # The label probe sees the same images, augmentation and seed: the gap between
        # the two is what the outputs carry beyond the predicted class.
        inputs = {"outputs": probe_inputs(train_outputs, heldout_outputs)}
        if with_label:
            inputs["label"] = (argmax_only(train_outputs), argmax_only(heldout_outputs))
        for name, (train_in, heldout_in) in inputs.items():
            decoder = train_output_decoder(
                train_in,
                train_x,
                steps=config.probe_steps,
                batch_size=config.probe_batch,
                alpha=config.probe_alpha,
                gamma=config.probe_gamma,
                seed=seed,
            )
            scores[name].append(reconstruction_quality(decoder, heldout_in, heldout, metric))

    def mean(runs: list[dict[str, float]]) -> dict[str, float]:
        return {key: float(sum(run[key] for run in runs) / len(runs)) for key in runs[0]}

    label = mean(scores["label"]) if with_label else None
    return _Probe(mean(scores["outputs"]), output_entropy(heldout_outputs), label)


@cache
def _metric(task: ModelTask, samples: int) -> MahalanobisMetric:
    return MahalanobisMetric(task.loader().train_images[:samples])


@cache
def _reference(task: ModelTask, config: DetectorConfig) -> _Probe:
    """The verifier's own honest model of the task and its probe (trained once per process)."""
    honest = train_vicious(
        task, ViciousConfig(epochs=config.reference_epochs, train_samples=config.probe_samples, seed=config.seed + 1000)
    )
    return _probe(honest.classifier, task, config, _metric(task, config.probe_samples), with_label=False)


# Settings the reference model and its probe do not depend on: configs that differ only
# in them (the benchmark's calibrated margin) share one cached reference.
_VERDICT_ONLY_SETTINGS: dict[str, Any] = {
    "finetune_samples": 0,
    "finetune_steps": 0,
    "finetune_batch": 0,
    "finetune_lr": 0.0,
    "v_threshold": 0.0,
    "psnr_margin_db": 0.0,
    "probe_baseline": "reference",
    "reference_margin_db": None,
    "retrain_epochs": 0,
    "retrain_batch": 0,
    "retrain_lr": 0.0,
    "retrain_match": "accuracy",
    "calibration_copies": 1,
}


def untrainable_reason(module: nn.Module, images: torch.Tensor) -> str:
    """Why fine-tuning cannot move ``module``'s outputs on ``images`` (no weights, no gradient reaches them), or ``""``.

    Example:
        >>> untrainable_reason(nn.Linear(4, 2), torch.rand(3, 4))
        ''
    """
    weights = [p for p in module.parameters() if p.requires_grad]
    if not weights:
        return "not computed: the graph has no weights to fine-tune"
    training = module.training
    logits = module.eval()(images)  # as it is fine-tuned: frozen normalisation statistics, no dropout
    module.train(training)
    gradients = torch.autograd.grad(logits.sum(), weights, allow_unused=True) if logits.requires_grad else ()
    if not any(g is not None and bool(g.ne(0).any()) for g in gradients):
        return (
            "not computed: no gradient reaches the graph's weights from its outputs (they pass through "
            "rounding, integer casts or an argmax), so fine-tuning cannot move them"
        )
    return ""


def _fine_tune_signal(
    trainable: nn.Module | str,
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout: torch.Tensor,
    config: DetectorConfig,
    unavailable: dict[str, str],
) -> tuple[float | None, float | None]:
    """``(v, C)``, or ``(None, None)`` with the reason recorded in ``unavailable``."""
    if isinstance(trainable, str):
        unavailable["fine_tune"] = trainable
        return None, None
    try:
        return fine_tune_divergence(trainable, images, labels, heldout, config)
    except FloatingPointError as exc:
        unavailable["fine_tune"] = f"not computed: {exc}"
        return None, None


def fresh_copy(module: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """The same architecture with freshly drawn weights.

    A converted upload (:class:`~cloud_stub.verification.runtime.ConventionAdapter`) is
    re-initialised by its graph's roles; any other torch module by its layers'
    ``reset_parameters`` (with torch's global generator forked and seeded from ``generator``).
    """
    from cloud_stub.verification.runtime import ConventionAdapter

    if isinstance(module, ConventionAdapter):
        return ConventionAdapter(module.graph.reinitialise(generator), module.conventions)
    fresh = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        for layer in fresh.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


ACCURACY_BAND = 0.02  # a retrained copy within this of the upload's accuracy counts as equally accurate
ENTROPY_BAND = 0.1  # ... within this share of the upload's output entropy, as equally confident
_CHECK_EVERY = 20  # steps between checks of a retrained copy


def _match_score(module: Classifier, images: torch.Tensor, labels: torch.Tensor, match: str) -> float:
    """How far training has gone, as the upload is measured: accuracy, or output entropy (falls as it trains)."""
    outputs = classifier_outputs(module, images)
    if match == "entropy":
        return output_entropy(outputs)
    return float((outputs.argmax(1) == labels).float().mean())


def _band(score: float, target: float, match: str) -> int:
    """-1 before the upload's band, 0 in it, 1 past it (more trained than the upload)."""
    if match == "entropy":
        low, high = target * (1 - ENTROPY_BAND), target * (1 + ENTROPY_BAND)
        return 1 if score < low else (-1 if score > high else 0)
    return 1 if score > target + ACCURACY_BAND else (-1 if score < target - ACCURACY_BAND else 0)


def train_through_accuracy(
    module: nn.Module, data: TaskData, *, target: float, config: DetectorConfig, validation: slice
) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
    """Train ``module`` honestly (cross-entropy, Adam) through the upload's accuracy; keep its states there.

    Checks the copy every 20 steps (its validation accuracy, or its output entropy with
    ``config.retrain_match = "entropy"``) and keeps the first and the last state within
    the band around ``target`` (:data:`ACCURACY_BAND`, :data:`ENTROPY_BAND`): the least
    and the most trained copy that matches the upload (an honest model's probe drops as
    training collapses its outputs onto the classes, and an architecture on a plateau
    stays in the band for long). Training ends ``config.retrain_epochs`` epochs in, or
    once the copy has been past the band for two checks.

    Returns:
        The kept states (one or two; the final state if it never reached the band) and
        a summary: steps, the score of the first and last kept state, the target.
    """
    images, labels = data.train_images[: config.probe_samples], data.train_labels[: config.probe_samples]
    val_x, val_y = data.test_images[validation], data.test_labels[validation]
    generator = torch.Generator().manual_seed(config.seed + 2000)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.retrain_lr)
    kept: list[tuple[float, dict[str, torch.Tensor]]] = []
    steps, past = 0, 0
    for _ in range(config.retrain_epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - 1, config.retrain_batch):
            idx = order[start : start + config.retrain_batch]
            module.train()
            loss = F.cross_entropy(module(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % _CHECK_EVERY:
                continue
            score = _match_score(module, val_x, val_y, config.retrain_match)
            where = _band(score, target, config.retrain_match)
            if where == 0:
                kept = [*kept[:1], (score, _state(module))]
            past = past + 1 if where > 0 else 0
            if past >= 2:
                break
        if past >= 2:
            break
    if not kept:
        kept = [(_match_score(module, val_x, val_y, config.retrain_match), _state(module))]
    summary = {
        "match": config.retrain_match,
        "steps": steps,
        "first_score": kept[0][0],
        "last_score": kept[-1][0],
        "target": target,
    }
    return [state for _, state in kept], summary


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class _Retrained:
    probe: _Probe
    calibration: dict[str, Any]


def _retrained_probe(
    model: Classifier,
    trainable: nn.Module | str,
    task: ModelTask,
    config: DetectorConfig,
    metric: MahalanobisMetric,
    unavailable: dict[str, str],
) -> _Retrained | None:
    """The probe on the upload's own graph, re-initialised and trained honestly to the upload's accuracy.

    With ``config.calibration_copies`` above one, that many copies (other seeds) are
    trained; the baseline is their mean and their spread is added to the margin.
    """
    if isinstance(trainable, str):
        unavailable["retrained_baseline"] = trainable.replace("not computed", "not built") + (
            "; the verdict uses the reference baseline"
        )
        return None
    data = task.loader()
    start = config.heldout_samples + config.finetune_samples
    validation = slice(start, start + 500) if len(data.test_images) >= start + 100 else slice(0, config.heldout_samples)
    val_x, val_y = data.test_images[validation], data.test_labels[validation]
    target = _match_score(model, val_x, val_y, config.retrain_match)
    probes, training = [], []
    for copy_index in range(config.calibration_copies):
        generator = torch.Generator().manual_seed(config.seed + 3000 + copy_index)
        honest = fresh_copy(trainable, generator=generator)
        states, summary = train_through_accuracy(honest, data, target=target, config=config, validation=validation)
        # The copy's baseline is the more leaky of its states in the band.
        candidates = []
        for state in states:
            honest.load_state_dict(state)
            probe_config = replace(config, seed=config.seed + copy_index)
            try:
                candidates.append(_probe(honest.eval(), task, probe_config, metric, with_label=False))
            except NonFiniteOutputsError as exc:  # fresh weights can leave the graph's domain (Sqrt, Log of a weight)
                unavailable["retrained_baseline"] = (
                    f"not built: the re-initialised copy {str(exc).removeprefix('it ')}; "
                    "the verdict uses the reference baseline"
                )
                return None
        summary["state_psnr"] = [p.quality["psnr"] for p in candidates]
        training.append(summary)
        probes.append(max(candidates, key=lambda p: p.quality["psnr"]))
    psnrs = [p.quality["psnr"] for p in probes]
    spread = max(psnrs) - min(psnrs)
    mean = {key: float(np.mean([p.quality[key] for p in probes])) for key in probes[0].quality}
    calibration = {
        "copies": len(probes),
        "validation_images": len(val_x),
        "copy_psnr": psnrs,
        "spread_db": spread,
        "margin_db": config.psnr_margin_db + spread,
        "training": training,
    }
    return _Retrained(_Probe(mean, float(np.mean([p.entropy for p in probes]))), calibration)


@dataclass(frozen=True)
class _Verdict:
    gap: float
    margin: float
    vicious: bool
    rule: str
    reference: _Probe | None
    retrained: _Retrained | None


_REFERENCE_CACHE_FORMAT = 1


def _package_version() -> str:
    try:
        return importlib.metadata.version("edge-feature-sdk")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _reference_file(cache: Path, task: ModelTask, config: DetectorConfig) -> Path:
    """Where a built-in task's reference probe is kept: named by everything it depends on."""
    described = {
        "task": task.name,
        "config": asdict(config),
        # A release may train or probe the reference differently: its file is another one.
        "package": _package_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "format": _REFERENCE_CACHE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    return cache / f"reference-{task.name}-{digest}.json"


def _read_reference(path: Path) -> _Probe | None:
    """A kept reference probe, or ``None`` if there is none or it is not one (it is then recomputed)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        quality = {str(k): float(v) for k, v in stored["quality"].items()}
        entropy = float(stored["entropy"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not {"psnr", "ssim", "risk"} <= set(quality) or not all(map(math.isfinite, [*quality.values(), entropy])):
        return None
    return _Probe(quality, entropy)


def _kept_reference(task: ModelTask, config: DetectorConfig, cache: Path | None) -> _Probe:
    """The reference probe, read from ``cache`` for a built-in task when it was computed before, else computed.

    A fresh process (each ``edge-cloud verify``, each of the service's jobs) otherwise
    trains the reference again. A cache that cannot be written costs only the saving.
    """
    if cache is None or task.name not in MODEL_TASKS:
        return _reference(task, config)
    path = _reference_file(cache, task, config)
    kept = _read_reference(path)
    if kept is not None:
        return kept
    probe = _reference(task, config)
    with contextlib.suppress(OutputWriteError):
        write_json(path, {"task": task.name, "quality": probe.quality, "entropy": probe.entropy})
    return probe


def _reference_probe(
    task: ModelTask, config: DetectorConfig, unavailable: dict[str, str], cache: Path | None
) -> _Probe | None:
    """The verifier's reference probe, or ``None`` with the reason when its network does not fit the task."""
    try:
        return _kept_reference(task, replace(config, **_VERDICT_ONLY_SETTINGS), cache)
    except ValueError as exc:
        unavailable["reference"] = f"not built: {exc}"
        return None


def _cleared_by_reference(probe: _Probe, reference: _Probe | None, config: DetectorConfig) -> bool:
    """Whether the probe is within the reference's margin, which makes the both-baselines verdict honest already."""
    if reference is None or config.reference_margin_db is None or config.probe_baseline != "retrained":
        return False
    return probe.quality["psnr"] - reference.quality["psnr"] <= config.reference_margin_db


def _verdict(
    model: Classifier,
    trainable: nn.Module | str,
    task: ModelTask,
    config: DetectorConfig,
    metric: MahalanobisMetric,
    probe: _Probe,
    unavailable: dict[str, str],
    timings: dict[str, float],
    reference_cache: Path | None,
) -> _Verdict:
    """The gap to the configured baseline; a retrained copy falls back to the reference, that to the label probe.

    On a built-in task the reference is probed first: when the verdict needs both the
    reference and the retrained copy to be beaten and the reference is not, the copy is
    not trained (the verdict is honest whatever it reads; most of a verification's time).
    """
    kind, margin = config.probe_baseline, config.psnr_margin_db
    retrained = reference = None
    skipped = False
    if task.name in MODEL_TASKS or kind == "reference":  # a built-in task's reference is trained once per process
        t = time.perf_counter()
        reference = _reference_probe(task, config, unavailable, reference_cache)
        timings["reference"] = time.perf_counter() - t
        if reference is None and kind == "reference":
            kind = "label"
    if kind == "retrained" and _cleared_by_reference(probe, reference, config):
        assert reference is not None and config.reference_margin_db is not None
        unavailable["retrained_baseline"] = (
            f"not needed: the probe is within {config.reference_margin_db:.2f} dB of the reference model's "
            f"({probe.quality['psnr'] - reference.quality['psnr']:+.2f} dB), so the verdict is honest whatever "
            "the retrained copy reads"
        )
        kind, margin, skipped = "reference", config.reference_margin_db, True
    elif kind == "retrained":
        t = time.perf_counter()
        retrained = _retrained_probe(model, trainable, task, config, metric, unavailable)
        timings["retrained"] = time.perf_counter() - t
        if retrained is None:  # the reference's own margin, not the one calibrated for the retrained copy
            if reference is None and "reference" not in unavailable:
                t = time.perf_counter()
                reference = _reference_probe(task, config, unavailable, reference_cache)
                timings["reference"] = time.perf_counter() - t
            kind = "reference" if reference is not None else "label"
            margin = config.reference_margin_db if config.reference_margin_db is not None else margin
    baselines = {
        "reference": reference.quality if reference else None,
        "label": probe.label_quality,
        "retrained": retrained.probe.quality if retrained else None,
    }
    baseline = baselines[kind]
    assert baseline is not None
    margin = retrained.calibration["margin_db"] if retrained is not None else margin
    gap = probe.quality["psnr"] - baseline["psnr"]
    rule = f"vicious if the decoder probe's PSNR exceeds {_BASELINE_WORDS[kind]} by more than {margin:.2f} dB"
    if retrained is not None and config.calibration_copies > 1:
        rule += f" ({config.psnr_margin_db} dB + the spread of {config.calibration_copies} copies)"
    vicious = gap > margin
    if retrained is not None and reference is not None and config.reference_margin_db is not None:
        # Both: more than a standard honest model leaks, and more than this architecture leaks trained honestly.
        vicious = vicious and probe.quality["psnr"] - reference.quality["psnr"] > config.reference_margin_db
        rule += f", and exceeds {_BASELINE_WORDS['reference']} by more than {config.reference_margin_db:.2f} dB"
    elif skipped:
        rule += f", and exceeds {_BASELINE_WORDS['retrained']} by more than its calibrated margin"
    return _Verdict(gap, margin, vicious, rule, reference, retrained)


def verify_classifier(
    model: Classifier,
    *,
    task: str | ModelTask,
    config: DetectorConfig | None = None,
    trainable: nn.Module | str | None = None,
    reference_cache: Path | None = None,
) -> VerificationReport:
    """Run the three signals on a classifier.

    Args:
        model: Images ``(N, C, S, S)`` in ``[0, 1]`` -> logits ``(N, classes)``: a torch
            module, or an upload run by onnxruntime (:class:`~cloud_stub.verification.runtime.OnnxClassifier`).
        task: The claimed task: a built-in name or an operator's :class:`ModelTask`.
        config: Budget and thresholds; ``DetectorConfig.for_task`` if omitted.
        trainable: The torch module the fine-tune signal trains (a copy is tuned), or
            the reason there is none; ``model`` itself when it is a torch module.
        reference_cache: Folder where a built-in task's reference probe is kept between
            processes (a JSON file named by the task, the settings and torch's version);
            ``None`` computes it once per process.

    Returns:
        The report; a signal that could not be computed is ``None`` there and its
        reason is in ``unavailable``.

    Raises:
        TaskDataError: The task's data is not installed.
        NonFiniteOutputsError: ``model`` scores some task image NaN or infinite (found
            only here for images beyond the upload check's probe batches).
    """
    spec = resolve_task(task)
    config = config or DetectorConfig.for_task(spec.name)
    start = time.perf_counter()
    data = spec.loader()
    if trainable is None:
        trainable = model if isinstance(model, nn.Module) else "not computed: no trainable copy of the model"
    if isinstance(trainable, nn.Module):
        trainable = untrainable_reason(trainable, data.test_images[:7]) or trainable
    timings: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    heldout_x = data.test_images[: config.heldout_samples]
    heldout_y = data.test_labels[: config.heldout_samples]
    # The labelled fine-tuning batch comes from held-out images beyond those compared.
    tune = slice(config.heldout_samples, config.heldout_samples + config.finetune_samples)
    tune_x, tune_y = data.test_images[tune], data.test_labels[tune]
    if len(tune_x) < config.finetune_samples:  # small tasks (ORL): fine-tune on training images
        tune_x, tune_y = data.train_images[: config.finetune_samples], data.train_labels[: config.finetune_samples]
    t = time.perf_counter()
    metric = _metric(spec, config.probe_samples)
    # First: it refuses a model whose scores are not all finite, before anything else is trained.
    probe = _probe(model, spec, config, metric, with_label=True)
    assert probe.label_quality is not None
    timings["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    v, cosine = _fine_tune_signal(trainable, tune_x, tune_y, heldout_x, config, unavailable)
    timings["fine_tune"] = time.perf_counter() - t
    verdict = _verdict(model, trainable, spec, config, metric, probe, unavailable, timings, reference_cache)
    if not math.isfinite(verdict.gap):  # NaN exceeds no margin: it would read as honest
        raise NonFiniteOutputsError(
            f"the decoder probe could not be scored on its outputs (PSNR {probe.quality['psnr']}, baseline gap "
            f"{verdict.gap}), so what they carry cannot be measured"
        )
    accuracy = float((classifier_outputs(model, heldout_x).argmax(1) == heldout_y).float().mean())
    used = {
        "description": spec.description,
        "heldout_images": len(heldout_x),
        "finetune_images": len(tune_x),
        "probe_training_images": min(config.probe_samples, len(data.train_images)),
    }
    return VerificationReport(
        task=spec.name,
        data=used,
        verdict="vicious" if verdict.vicious else "honest",
        rule=verdict.rule,
        accuracy=accuracy,
        v=v,
        cosine=cosine,
        v_flag=None if v is None else v > config.v_threshold,
        entropy=probe.entropy,
        reference_entropy=verdict.reference.entropy if verdict.reference else None,
        probe=probe.quality,
        reference_probe=verdict.reference.quality if verdict.reference else None,
        label_probe=probe.label_quality,
        retrained_probe=verdict.retrained.probe.quality if verdict.retrained else None,
        calibration=verdict.retrained.calibration if verdict.retrained else None,
        psnr_gap_db=verdict.gap,
        config=asdict(config),
        seconds=time.perf_counter() - start,
        timings=timings,
        unavailable=unavailable,
    )
