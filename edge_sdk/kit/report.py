"""The training report of a kit: how good its head, generator and amortizer are.

Writes ``report.json``, ``report.md`` and PNG figures into the kit folder. The numbers
answer the questions a user has before trusting a kit: does the head solve its task
on raw features, does the generator make faces, and how well does a white-box
attacker invert raw features of unseen (private-test) faces.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import load_orl
from edge_sdk.figures import image_grid, plot_curves, save_image_rows
from edge_sdk.inversion import invert
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.training import TrainingLog
from edge_sdk.metrics import psnr, ssim

__all__ = ["KitEvaluation", "KitReport", "evaluate_kit", "write_training_report"]


@dataclass
class KitEvaluation:
    """What :func:`evaluate_kit` measured, and the pictures behind the inversion figures.

    Attributes:
        metrics: ``pose_accuracy`` per split and ``pose_majority_baseline`` (if the kit
            has a head), and ``inversion_private_test``: feature loss, SSIM and PSNR of
            the white-box inversion at the amortizer's guess and after the Adam steps.
        pictures: ``original``, ``amortized`` and ``inverted`` private-test faces,
            ``(N, C, S, S)`` in ``[0, 1]``.
    """

    metrics: dict[str, Any]
    pictures: dict[str, torch.Tensor] = field(repr=False)


@dataclass
class KitReport:
    """A kit's training report; :meth:`to_json` is ``report.json``.

    Attributes:
        kit: The kit's name.
        training: The manifest's training record (data, seed, settings, seconds).
        metrics: See :class:`KitEvaluation`.
        figures: PNG files written beside the report.
    """

    kit: str
    training: dict[str, Any]
    metrics: dict[str, Any]
    figures: list[str]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dictionary."""
        return asdict(self)


def _accuracy(kit: Kit, images: torch.Tensor, labels: torch.Tensor) -> float:
    if kit.head is None:
        raise ValueError("kit has no head")
    with torch.no_grad():
        return float((kit.head(kit.encode(images)).argmax(1) == labels).float().mean())


def evaluate_kit(kit: Kit, *, inversion_steps: int = 200, inversion_lr: float = 0.05, seed: int = 0) -> KitEvaluation:
    """Measure a kit trained on ORL: pose accuracy per split, inversion of private-test features.

    Returns:
        The metrics (``pose_accuracy`` per split; for the white-box inversion of raw
        private-test features, feature loss, SSIM and PSNR against the originals at
        the amortizer's guess and after ``inversion_steps`` Adam steps) and the pictures.
    """
    spec = kit.spec
    splits = {name: load_orl(name, spec=spec) for name in ("public-train", "public-val", "private-test")}
    result: dict[str, Any] = {}
    if kit.head is not None:
        result["pose_accuracy"] = {name: _accuracy(kit, s.images, s.pose) for name, s in splits.items()}
        counts = torch.bincount(splits["private-test"].pose, minlength=kit.architecture.num_classes)
        result["pose_majority_baseline"] = {"private-test": float(counts.max() / counts.sum())}
    test = splits["private-test"]
    features = kit.encode(test.images)
    start = time.perf_counter()
    inv = invert(
        features,
        generator=kit.generator,
        encoder=kit.encoder,
        amortizer=kit.amortizer,
        steps=inversion_steps,
        lr=inversion_lr,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        amortized = to_unit_range(kit.generator(kit.amortizer(features)), spec)
        inverted = to_unit_range(kit.generator(inv.latent), spec)
    original = to_unit_range(test.images, spec)
    feature_scale = float(features.pow(2).flatten(1).mean(1).mean())
    result["inversion_private_test"] = {
        "images": len(test),
        "steps": inversion_steps,
        "lr": inversion_lr,
        "seconds": round(seconds, 2),
        "feature_mean_square": feature_scale,
        "amortized": {
            "feature_loss": float(inv.initial_loss.mean()),
            "relative_feature_loss": float(inv.initial_loss.mean()) / feature_scale,
            "ssim": float(ssim(amortized, original).mean()),
            "psnr_db": float(psnr(amortized, original).mean()),
        },
        "inverted": {
            "feature_loss": float(inv.loss.mean()),
            "relative_feature_loss": float(inv.loss.mean()) / feature_scale,
            "ssim": float(ssim(inverted, original).mean()),
            "psnr_db": float(psnr(inverted, original).mean()),
        },
    }
    return KitEvaluation(metrics=result, pictures={"original": original, "amortized": amortized, "inverted": inverted})


def write_training_report(kit: Kit, log: TrainingLog, out: str | Path, *, inversion_steps: int = 200) -> KitReport:
    """Evaluate a freshly trained ORL kit and write the report files into ``out``.

    Returns:
        The report; ``report.json`` holds its :meth:`KitReport.to_json`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = evaluate_kit(kit, inversion_steps=inversion_steps)
    pictures = evaluation.pictures
    with torch.no_grad():
        samples = to_unit_range(
            kit.generator(torch.randn(64, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(0))),
            kit.spec,
        )
    image_grid(samples, columns=8).save(out / "generator_samples.png")
    show = slice(0, 80, 4)  # one image per private-test identity
    save_image_rows(
        [
            ("original", pictures["original"][show]),
            ("amortized G(A(F))", pictures["amortized"][show]),
            (f"inverted ({inversion_steps} st.)", pictures["inverted"][show]),
        ],
        out / "inversions.png",
    )
    curves = {k: v for k, v in asdict(log).items() if isinstance(v, list) and v}
    plot_curves(curves, out / "training_curves.png", title=f"kit '{kit.manifest.name}' training")
    report = KitReport(
        kit=kit.manifest.name,
        training=kit.manifest.training,
        metrics=evaluation.metrics,
        figures=["generator_samples.png", "inversions.png", "training_curves.png"],
    )
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report.to_json()), encoding="utf-8")
    return report


def _markdown(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = [f"# Training report: kit `{report['kit']}`", ""]
    if "pose_accuracy" in m:
        lines += ["## Pose head on raw features", "", "| split | accuracy |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in m["pose_accuracy"].items()]
        lines += [f"| private-test majority class | {m['pose_majority_baseline']['private-test']:.3f} |", ""]
    inv = m["inversion_private_test"]
    lines += [
        f"## White-box inversion of raw private-test features ({inv['images']} images)",
        "",
        "| start | feature loss | relative | SSIM | PSNR dB |",
        "|---|---|---|---|---|",
    ]
    for key in ("amortized", "inverted"):
        r = inv[key]
        label = "amortizer guess" if key == "amortized" else f"after {inv['steps']} Adam steps"
        cells = [f"{r['feature_loss']:.4f}", f"{r['relative_feature_loss']:.3f}"]
        cells += [f"{r['ssim']:.3f}", f"{r['psnr_db']:.2f}"]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        "![generator samples](generator_samples.png)",
        "",
        "![inversions](inversions.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    return "\n".join(lines)
