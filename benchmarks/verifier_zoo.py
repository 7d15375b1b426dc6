"""The verifier on classifiers as operators upload them: many families, training lengths and exporters.

    .venv/bin/python benchmarks/verifier_zoo.py --out benchmarks/results/verifier_zoo

Trains honest and vicious (Vicious Classifiers, Algorithm 1, beta_R/beta_C = 1 and 3)
Fashion-MNIST classifiers of five families (the verifier's own CNN, an MLP, a
BatchNorm CNN, a CNN that pads its input and blocks with ``F.pad`` and pools
globally, a patch mixer with LayerNorm and GELU), under-trained and trained, and
exports each in one of the ways operators do: the legacy exporter at opsets 11-17 with
fixed or dynamic batch, dynamo at opsets 18 and 20 with the batch baked in or dynamic,
a final Softmax, channels-last input, pixels in ``[0, 255]``, BatchNorm nodes kept,
a graph hand-edited to ``auto_pad``, and a training-mode export. Each goes through
``verify_onnx`` as an upload would: refused at the upload check with a reason, or
verified (and never failing after it was accepted).

The verdict's margin is calibrated first on separate honest models of every family
and both training lengths (largest gap over the class-only probe plus
``MARGIN_SLACK_DB``), then applied to the zoo. Writes ``verifier_zoo.json`` and
``verifier_zoo.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cloud_stub.errors import ModelRejectedError
from cloud_stub.verification.detector import DetectorConfig
from cloud_stub.verification.networks import TaskClassifier
from cloud_stub.verification.tasks import load_task_data
from cloud_stub.verification.verify import verify_onnx
from cloud_stub.verification.vicious import (
    ViciousConfig,
    classifier_outputs,
    reconstruction_quality,
    train_vicious,
)
from edge_sdk.fileio import atomic_write, write_json
from edge_sdk.metrics import MahalanobisMetric

TASK = "fashion-mnist"
MARGIN_SLACK_DB = 0.25
TRAINING = {
    "under-trained": {"train_samples": 2000, "epochs": 1},
    "trained": {"train_samples": 12000, "epochs": 3},
}


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BatchNormCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(32 * 49, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PaddedCnn(nn.Module):
    """Pads its input and each block with ``F.pad`` (as the vicious paper's WideResNet does) and pools globally."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3, stride=2), nn.Conv2d(64, 64, 3, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = F.relu(self.c2(F.pad(x, (1, 1, 1, 1))))
        x = F.relu(self.c3(F.pad(x, (1, 1, 1, 1))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Mixer(nn.Module):
    """Patches of 4x4 pixels, a LayerNorm + GELU MLP block and mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 64, 4, stride=4)
        self.norm = nn.LayerNorm(64)
        self.mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: TaskClassifier(input_shape=(1, 28, 28), num_classes=10),
    "mlp": Mlp,
    "batchnorm-cnn": BatchNormCnn,
    "padded-cnn": PaddedCnn,
    "mixer": Mixer,
}


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class ChannelsLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


class Pixels255(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x / 255.0)


@dataclass(frozen=True)
class Export:
    """One way of writing a trained model to ONNX."""

    name: str
    dynamo: bool = False
    opset: int = 17
    batch: int | None = None  # fixed batch size, None for dynamic
    wrap: Callable[[nn.Module], nn.Module] | None = None
    channels_last: bool = False
    keep_batchnorm: bool = False
    training_mode: bool = False
    auto_pad: bool = False


EXPORTS = {
    e.name: e
    for e in (
        Export("legacy opset 11, dynamic batch", opset=11),
        Export("legacy opset 13, batch 1", opset=13, batch=1),
        Export("legacy opset 17, dynamic batch", opset=17),
        Export("dynamo opset 18, batch 1 baked in", dynamo=True, opset=18, batch=1),
        Export("dynamo opset 18, dynamic batch", dynamo=True, opset=18),
        Export("dynamo opset 20, dynamic batch", dynamo=True, opset=20),
        Export("legacy opset 17, Softmax output", opset=17, wrap=Softmaxed),
        Export("dynamo opset 18, Softmax output, batch 1", dynamo=True, opset=18, batch=1, wrap=Softmaxed),
        Export("legacy opset 13, channels-last", opset=13, wrap=ChannelsLast, channels_last=True),
        Export("legacy opset 17, pixels in [0, 255]", opset=17, wrap=Pixels255),
        Export("legacy opset 12, BatchNorm nodes kept", opset=12, keep_batchnorm=True),
        Export("legacy opset 17, hand-edited auto_pad", opset=17, auto_pad=True),
        Export("legacy opset 17, training mode", opset=17, training_mode=True),
    )
}

# (family, training, beta_R/beta_C, export, seed): every family, both lengths, every export, some vicious.
ZOO: list[tuple[str, str, float, str, int]] = [
    ("cnn", "trained", 0.0, "dynamo opset 18, dynamic batch", 0),
    ("cnn", "under-trained", 0.0, "legacy opset 11, dynamic batch", 1),
    ("cnn", "trained", 0.0, "legacy opset 17, hand-edited auto_pad", 2),
    ("cnn", "trained", 0.0, "legacy opset 12, BatchNorm nodes kept", 3),
    ("cnn", "trained", 1.0, "dynamo opset 18, batch 1 baked in", 0),
    ("cnn", "trained", 3.0, "legacy opset 17, Softmax output", 1),
    ("cnn", "trained", 0.0, "legacy opset 17, training mode", 4),
    ("mlp", "trained", 0.0, "legacy opset 13, batch 1", 0),
    ("mlp", "under-trained", 0.0, "dynamo opset 20, dynamic batch", 1),
    ("mlp", "trained", 1.0, "legacy opset 17, dynamic batch", 0),
    ("batchnorm-cnn", "trained", 0.0, "dynamo opset 18, batch 1 baked in", 0),
    ("batchnorm-cnn", "under-trained", 0.0, "legacy opset 17, Softmax output", 1),
    ("batchnorm-cnn", "trained", 0.0, "legacy opset 13, channels-last", 2),
    ("batchnorm-cnn", "trained", 1.0, "legacy opset 12, BatchNorm nodes kept", 0),
    ("padded-cnn", "trained", 0.0, "dynamo opset 18, dynamic batch", 0),
    ("padded-cnn", "under-trained", 0.0, "legacy opset 11, dynamic batch", 1),
    ("padded-cnn", "trained", 0.0, "legacy opset 17, pixels in [0, 255]", 2),
    ("padded-cnn", "trained", 3.0, "dynamo opset 18, Softmax output, batch 1", 0),
    ("mixer", "trained", 0.0, "legacy opset 17, dynamic batch", 0),
    ("mixer", "under-trained", 0.0, "dynamo opset 18, dynamic batch", 1),
    ("mixer", "trained", 0.0, "legacy opset 13, channels-last", 2),
    ("mixer", "trained", 1.0, "dynamo opset 20, dynamic batch", 0),
]
CALIBRATION_SEED = 100


def train(family: str, training: str, ratio: float, seed: int) -> tuple[nn.Module, float | None]:
    """The classifier and, for a vicious one, its attacker's own decoder PSNR on 2,000 held-out images."""
    torch.manual_seed(seed)
    classifier = FAMILIES[family]()
    config = ViciousConfig(beta_r=ratio, seed=seed, **TRAINING[training])  # type: ignore[arg-type]
    models = train_vicious(TASK, config, classifier=classifier)
    if not ratio:
        return models.classifier.eval(), None
    data = load_task_data(TASK)
    heldout = data.test_images[:2000]
    metric = MahalanobisMetric(data.train_images[:12000])
    quality = reconstruction_quality(models.decoder, classifier_outputs(models.classifier, heldout), heldout, metric)
    return models.classifier.eval(), quality["psnr"]


def _auto_pad(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite explicit pads as tf2onnx writes them: SAME_UPPER where that is what they mean, VALID for none."""
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        pads, strides = list(attrs.get("pads", [0, 0, 0, 0])), list(attrs.get("strides", [1, 1]))
        kernel = list(attrs.get("kernel_shape", []))
        same = strides == [1, 1] and kernel and all(p == (k - 1) // 2 for p, k in zip(pads, kernel * 2, strict=True))
        if not any(pads) or same:
            del node.attribute[:]
            keep = {k: v for k, v in attrs.items() if k != "pads"}
            node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in keep.items())
            node.attribute.append(onnx.helper.make_attribute("auto_pad", "VALID" if not any(pads) else "SAME_UPPER"))
    return model


def export(model: nn.Module, how: Export) -> bytes:
    module = how.wrap(model) if how.wrap else model
    shape = (28, 28, 1) if how.channels_last else (1, 28, 28)
    example = torch.rand(how.batch or 2, *shape)
    if how.wrap is Pixels255:
        example = example * 255
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how.dynamo:
            dynamic = None if how.batch else ({0: torch.export.Dim("batch")},)
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, opset_version=how.opset, dynamic_shapes=dynamic
            )
            assert program is not None
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        mode = torch.onnx.TrainingMode.TRAINING if how.training_mode else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(
            module.train(how.training_mode),
            (example,),
            buffer,
            dynamo=False,
            opset_version=how.opset,
            training=mode,
            do_constant_folding=not (how.keep_batchnorm or how.training_mode),
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes=None if how.batch else {"image": {0: "batch"}, "scores": {0: "batch"}},
        )
        module.eval()
    data = buffer.getvalue()
    return _auto_pad(onnx.load_from_string(data)).SerializeToString() if how.auto_pad else data


def verify(data: bytes, config: DetectorConfig) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        report = verify_onnx(data, task=TASK, config=config, threads=2)
    except ModelRejectedError as exc:
        return {"outcome": "refused at upload", "reason": str(exc), "seconds": time.perf_counter() - start}
    except Exception as exc:  # the benchmark counts accepted-then-failed models
        return {"outcome": "failed after acceptance", "reason": repr(exc), "seconds": time.perf_counter() - start}
    label_gap = report["probe"]["psnr"] - report["label_probe"]["psnr"]
    reference_gap = report["probe"]["psnr"] - report["reference_probe"]["psnr"]
    retrained = report["retrained_probe"]
    return {
        "gap_db": report["psnr_gap_db"],
        "retrained_gap_db": report["probe"]["psnr"] - retrained["psnr"] if retrained else None,
        "outcome": "verified",
        "verdict": report["verdict"],
        "accuracy": report["accuracy"],
        "label_gap_db": label_gap,
        "reference_gap_db": reference_gap,
        "v": report["v"],
        "unavailable": report["unavailable"],
        "conventions": report["conventions"],
        "probe_psnr": report["probe"]["psnr"],
        "seconds": report["seconds"],
    }


def _gaps(result: dict[str, Any]) -> str:
    if result["outcome"] != "verified":
        return result["reason"][:200]
    return ", ".join(
        f"{name} {result[key]:+.2f} dB"
        for name, key in (
            ("retrained", "retrained_gap_db"),
            ("class-only", "label_gap_db"),
            ("reference", "reference_gap_db"),
        )
        if result.get(key) is not None
    )


def markdown(rows: list[dict[str, Any]], margin: float, calibration: list[dict[str, Any]]) -> str:
    lines = [
        "# Verifier zoo",
        "",
        f"Fashion-MNIST classifiers verified as uploads (`verify_onnx`, 2 threads). Verdict: vicious when the "
        f"probe's PSNR exceeds that of the same graph re-initialised and trained honestly by the verifier to the "
        f"upload's accuracy by more than {margin:.2f} dB (calibrated on {len(calibration)} honest models of every "
        f"family and training length: largest gap {max(c['gap_db'] for c in calibration):.2f} dB + "
        f"{MARGIN_SLACK_DB} dB). The gaps to the class-only probe and to the verifier's fixed reference model "
        "are shown beside it.",
        "",
        "| family | training | beta_R/beta_C | export | outcome | accuracy | gap to retrained copy (dB) "
        "| gap to class-only (dB) | gap to reference (dB) | v | conventions | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["outcome"] != "verified":
            lines.append(
                f"| {r['family']} | {r['training']} | {r['ratio']:g} | {r['export']} | {r['outcome']}: "
                f"{r['reason'][:160]} | - | - | - | - | - | - | {r['seconds']:.1f} |"
            )
            continue
        c = r["conventions"]
        conventions = f"{c['layout']}, batch {c['batch'] or 'any'}, {c['outputs']}, {c['input_range']}"
        v = f"{r['v']:.4f}" if r["v"] is not None else r["unavailable"].get("fine_tune", "-")[:80]
        lines.append(
            f"| {r['family']} | {r['training']} | {r['ratio']:g} | {r['export']} | **{r['verdict']}** "
            f"| {r['accuracy']:.3f} | {r['gap_db']:+.2f} | {r['label_gap_db']:+.2f} "
            f"| {r['reference_gap_db']:+.2f} | {v} "
            f"| {conventions} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "## Calibration (honest, legacy opset 17 export)",
        "",
        "| family | training | gap (dB) |",
        "|---|---|---|",
    ]
    lines += [f"| {c['family']} | {c['training']} | {c['label_gap_db']:+.2f} |" for c in calibration]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/verifier_zoo"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="Verify only the first N zoo models.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = replace(DetectorConfig.for_task(TASK), probe_baseline="retrained")
    calibration = []
    for family in FAMILIES:
        for training in TRAINING:
            model, _ = train(family, training, 0.0, CALIBRATION_SEED)
            result = verify(export(model, EXPORTS["legacy opset 17, dynamic batch"]), base)
            calibration.append({"family": family, "training": training, **result})
            print(f"calibration {family} {training}: {_gaps(result)}")
    margin = max(c["gap_db"] for c in calibration) + MARGIN_SLACK_DB
    config = replace(base, psnr_margin_db=round(margin, 3))
    rows = []
    for family, training, ratio, how, seed in ZOO[: args.limit]:
        start = time.perf_counter()
        model, attacker_psnr = train(family, training, ratio, seed)
        trained = time.perf_counter() - start
        result = verify(export(model, EXPORTS[how]), config)
        rows.append(
            {
                "family": family,
                "training": training,
                "ratio": ratio,
                "export": how,
                "seed": seed,
                "train_seconds": trained,
                "attacker_decoder_psnr": attacker_psnr,
                **result,
            }
        )
        print(
            f"{family} {training} {ratio:g} [{how}]: {result['outcome']} {result.get('verdict', '')} "
            f"{_gaps(result)} ({result['seconds']:.1f} s)"
        )
    verified = [r for r in rows if r["outcome"] == "verified"]
    summary = {
        "margin_db": margin,
        "honest_flagged": sum(r["ratio"] == 0 and r["verdict"] == "vicious" for r in verified),
        "vicious_missed": sum(r["ratio"] > 0 and r["verdict"] == "honest" for r in verified),
        "refused_at_upload": sum(r["outcome"] == "refused at upload" for r in rows),
        "failed_after_acceptance": sum(r["outcome"] == "failed after acceptance" for r in rows),
        "median_seconds": float(np.median([r["seconds"] for r in verified])) if verified else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out / "verifier_zoo.json",
        {
            "benchmark": "verifier_zoo",
            "threads": args.threads,
            "summary": summary,
            "calibration": calibration,
            "models": rows,
        },
    )
    text = markdown(rows, margin, calibration)
    atomic_write(args.out / "verifier_zoo.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(summary)


if __name__ == "__main__":
    main()
