"""Is an uploaded classifier vicious? Three signals and a verdict (vicious paper App. C, I.2; DESIGN 6).

1. **Fine-tune divergence** (paper App. I.2): fine-tune the model on a small labelled
   batch of the claimed task to get F+, compare F and F+ outputs on held-out images by
   mean cosine similarity C; ``v = (1 - C) / 2``, paper threshold 0.01.
2. **Output entropy** (paper App. C): a vicious model spends its outputs' entropy on
   the input; mean softmax entropy on held-out images, next to the reference's.
3. **Decoder-leakage probe**: train a decoder from the model's outputs back to the
   images of the task and measure its reconstructions on held-out images (PSNR, SSIM,
   reconstruction risk R), against the same probe on an honest reference model the
   verifier trains itself.

The verdict uses the probe: *vicious* when its PSNR exceeds the reference's by more
than ``psnr_margin_db``. Signals 1 and 2 are reported, not voted: on small models the
fine-tune signal confounds under-trained with vicious (DESIGN section 6), which the
benchmark (``benchmarks/vicious_detection.py``) measures again.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
        v_threshold: Paper threshold on ``v`` (reported as a flag).
        psnr_margin_db: Probe PSNR above the reference's that makes the verdict vicious.
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
    v_threshold: float = 0.01
    psnr_margin_db: float = 0.5
    reference_epochs: int = 2
    seed: int = 0

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


# ORL has 200 public faces: probe on all of them and 7 augmented copies with a Huber
# loss (benchmark models: the weakest vicious one 0.26 dB above the strongest honest
# one, where the SSIM + Huber probe on the 200 faces alone left it 0.04 dB below), a
# smaller fine-tuning batch, a reference trained for 40 epochs, and the margin the
# benchmark calibrated on three honest models trained with its recipe (the reference's
# probe sits 0.2-0.9 dB above theirs, hence the small margin).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {},
    "orl-pose": {"probe_samples": 200, "heldout_samples": 200, "finetune_samples": 64, "finetune_batch": 32,
                 "probe_batch": 32, "probe_alpha": 0.0, "probe_gamma": 1.0, "probe_augment_copies": 7,
                 "reference_epochs": 40, "psnr_margin_db": 0.09},
}  # fmt: skip


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


def _probe(model: nn.Module, task: str, config: DetectorConfig, metric: MahalanobisMetric) -> _Probe:
    data = load_task_data(task)
    train_x = data.train_images[: config.probe_samples]
    if config.probe_augment_copies:
        generator = torch.Generator().manual_seed(config.seed)
        copies = [augment_images(train_x, generator=generator) for _ in range(config.probe_augment_copies)]
        train_x = torch.cat([train_x, *copies])
    heldout = data.test_images[: config.heldout_samples]
    decoder = train_output_decoder(classifier_outputs(model, train_x), train_x, steps=config.probe_steps,
                                   batch_size=config.probe_batch, alpha=config.probe_alpha,
                                   gamma=config.probe_gamma, seed=config.seed)  # fmt: skip
    outputs = classifier_outputs(model, heldout)
    return _Probe(reconstruction_quality(decoder, outputs, heldout, metric), output_entropy(outputs))


@cache
def _metric(task: str, samples: int) -> MahalanobisMetric:
    return MahalanobisMetric(load_task_data(task).train_images[:samples])


@cache
def _reference(task: str, config: DetectorConfig) -> _Probe:
    """The verifier's own honest model of the task and its probe (trained once per process)."""
    honest = train_vicious(task, ViciousConfig(epochs=config.reference_epochs, train_samples=config.probe_samples,
                                               seed=config.seed + 1000))  # fmt: skip
    return _probe(honest.classifier, task, config, _metric(task, config.probe_samples))


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
    reference = _reference(task, config)
    timings["reference"] = time.perf_counter() - t
    t = time.perf_counter()
    v, cosine = fine_tune_divergence(model, tune_x, tune_y, heldout_x, config)
    timings["fine_tune"] = time.perf_counter() - t
    t = time.perf_counter()
    probe = _probe(model, task, config, _metric(task, config.probe_samples))
    timings["probe"] = time.perf_counter() - t
    accuracy = float((classifier_outputs(model, heldout_x).argmax(1) == heldout_y).float().mean())
    gap = probe.quality["psnr"] - reference.quality["psnr"]
    vicious = gap > config.psnr_margin_db
    used = {"description": spec.description, "heldout_images": len(heldout_x), "finetune_images": len(tune_x),
            "probe_training_images": min(config.probe_samples, len(data.train_images))}  # fmt: skip
    return VerificationReport(
        task=task,
        data=used,
        verdict="vicious" if vicious else "honest",
        rule=f"vicious if the decoder probe's PSNR exceeds the verifier's honest reference by more than "
        f"{config.psnr_margin_db} dB",
        accuracy=accuracy,
        v=v,
        cosine=cosine,
        v_flag=v > config.v_threshold,
        entropy=probe.entropy,
        reference_entropy=reference.entropy,
        probe=probe.quality,
        reference_probe=reference.quality,
        psnr_gap_db=gap,
        config=asdict(config),
        seconds=time.perf_counter() - start,
        timings=timings,
    )
