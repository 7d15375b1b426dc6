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

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cloud_stub.verification.defences import argmax_only
from cloud_stub.verification.tasks import MODEL_TASKS, load_task_data
from cloud_stub.verification.vicious import (
    ViciousConfig,
    augment_images,
    classifier_outputs,
    reconstruction_quality,
    train_output_decoder,
    train_vicious,
)
from edge_sdk.metrics import MahalanobisMetric

__all__ = ["DetectorConfig", "VerificationReport", "fine_tune_divergence", "output_entropy", "verify_classifier"]


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
            verifier's honest reference model; ``"label"``, the same probes trained on
            the model's one-hot predicted classes.
        v_threshold: Paper threshold on ``v`` (reported as a flag).
        psnr_margin_db: Probe PSNR above the baseline's that makes the verdict vicious.
        reference_epochs: Epochs of the verifier's own honest reference model.
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
    seed: int = 0

    def __post_init__(self) -> None:
        if self.probe_baseline not in ("reference", "label"):
            raise ValueError(f"probe_baseline must be 'reference' or 'label', got {self.probe_baseline!r}")
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


# ORL has 200 public faces and 3 outputs, so a leak is worth tenths of a dB: probe on
# all the faces and 7 augmented copies with a Huber loss, average 3 probe seeds (one
# probe's PSNR moves 0.2 dB with its seed), and compare with the same probes on the
# model's predicted classes (the honest reference, trained another way than the
# uploader's model, probes 0.2-0.9 dB off honest models; the class-only baseline is the
# model's own). The margin is the largest gap of three honest models trained with the
# benchmark's recipe (0.35 dB) plus 0.1 dB.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {},
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
    v: float
    cosine: float
    v_flag: bool
    entropy: float
    reference_entropy: float
    probe: dict[str, float]
    reference_probe: dict[str, float]
    label_probe: dict[str, float]
    psnr_gap_db: float
    config: dict[str, Any]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def fine_tune_divergence(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, heldout: torch.Tensor, config: DetectorConfig
) -> tuple[float, float]:
    """``(v, C)``: fine-tune a copy of ``model`` on labelled images and compare outputs on ``heldout``.

    The copy is fine-tuned in eval mode (frozen normalisation statistics, no dropout),
    the way its exported ONNX graph computes.
    """
    tuned = copy.deepcopy(model).eval()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.finetune_lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.finetune_steps):
        idx = torch.randint(0, len(images), (min(config.finetune_batch, len(images)),), generator=generator)
        loss = F.cross_entropy(tuned(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    before, after = classifier_outputs(model, heldout), classifier_outputs(tuned, heldout)
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


def _probe(
    model: nn.Module, task: str, config: DetectorConfig, metric: MahalanobisMetric, *, with_label: bool
) -> _Probe:
    data = load_task_data(task)
    originals = data.train_images[: config.probe_samples]
    heldout = data.test_images[: config.heldout_samples]
    heldout_outputs = classifier_outputs(model, heldout)
    scores: dict[str, list[dict[str, float]]] = {"outputs": [], "label": []}
    for seed in range(config.seed, config.seed + config.probe_seeds):
        train_x = originals
        if config.probe_augment_copies:
            generator = torch.Generator().manual_seed(seed)
            copies = [augment_images(originals, generator=generator) for _ in range(config.probe_augment_copies)]
            train_x = torch.cat([originals, *copies])
        train_outputs = classifier_outputs(model, train_x)
        # The label probe sees the same images, augmentation and seed: the gap between
        # the two is what the outputs carry beyond the predicted class.
        inputs = {"outputs": (train_outputs, heldout_outputs)}
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
def _metric(task: str, samples: int) -> MahalanobisMetric:
    return MahalanobisMetric(load_task_data(task).train_images[:samples])


@cache
def _reference(task: str, config: DetectorConfig) -> _Probe:
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
}

_BASELINE_WORDS = {
    "reference": "that of the verifier's honest reference model",
    "label": "that of the same probe trained on the model's predicted classes alone",
}


def verify_classifier(model: nn.Module, *, task: str, config: DetectorConfig | None = None) -> VerificationReport:
    """Run the three signals on ``model`` (a torch module; ONNX uploads go through ``onnx_to_torch``).

    Raises:
        TaskDataError: The task's data is not installed.
    """
    config = config or DetectorConfig.for_task(task)
    start = time.perf_counter()
    spec = MODEL_TASKS[task]
    data = load_task_data(task)
    timings: dict[str, float] = {}
    heldout_x = data.test_images[: config.heldout_samples]
    heldout_y = data.test_labels[: config.heldout_samples]
    # The labelled fine-tuning batch comes from held-out images beyond those compared.
    tune = slice(config.heldout_samples, config.heldout_samples + config.finetune_samples)
    tune_x, tune_y = data.test_images[tune], data.test_labels[tune]
    if len(tune_x) < config.finetune_samples:  # small tasks (ORL): fine-tune on training images
        tune_x, tune_y = data.train_images[: config.finetune_samples], data.train_labels[: config.finetune_samples]
    t = time.perf_counter()
    reference = _reference(task, replace(config, **_VERDICT_ONLY_SETTINGS))
    timings["reference"] = time.perf_counter() - t
    t = time.perf_counter()
    v, cosine = fine_tune_divergence(model, tune_x, tune_y, heldout_x, config)
    timings["fine_tune"] = time.perf_counter() - t
    t = time.perf_counter()
    probe = _probe(model, task, config, _metric(task, config.probe_samples), with_label=True)
    assert probe.label_quality is not None
    timings["probe"] = time.perf_counter() - t
    accuracy = float((classifier_outputs(model, heldout_x).argmax(1) == heldout_y).float().mean())
    baseline = reference.quality if config.probe_baseline == "reference" else probe.label_quality
    gap = probe.quality["psnr"] - baseline["psnr"]
    vicious = gap > config.psnr_margin_db
    used = {
        "description": spec.description,
        "heldout_images": len(heldout_x),
        "finetune_images": len(tune_x),
        "probe_training_images": min(config.probe_samples, len(data.train_images)),
    }
    return VerificationReport(
        task=task,
        data=used,
        verdict="vicious" if vicious else "honest",
        rule=f"vicious if the decoder probe's PSNR exceeds {_BASELINE_WORDS[config.probe_baseline]} by more "
        f"than {config.psnr_margin_db} dB",
        accuracy=accuracy,
        v=v,
        cosine=cosine,
        v_flag=v > config.v_threshold,
        entropy=probe.entropy,
        reference_entropy=reference.entropy,
        probe=probe.quality,
        reference_probe=reference.quality,
        label_probe=probe.label_quality,
        psnr_gap_db=gap,
        config=asdict(config),
        seconds=time.perf_counter() - start,
        timings=timings,
    )
