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

The verdict (the Fashion-MNIST default: vicious if the probe beats the verifier's
reference model by 0.5 dB and the upload's own graph retrained honestly by a margin)
has its retrained margin calibrated first on separate honest models of every family
and both training lengths (the largest retrained gap among those the reference test
alone would flag, plus ``MARGIN_SLACK_DB``), then applied to the zoo. Writes ``verifier_zoo.json`` and
``verifier_zoo.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cloud_stub.errors import ModelRejectedError
from cloud_stub.verification.detector import DetectorConfig
from cloud_stub.verification.tasks import load_task_data
from cloud_stub.verification.verify import verify_onnx
from cloud_stub.verification.vicious import (
    ViciousConfig,
    classifier_outputs,
    reconstruction_quality,
    train_vicious,
)
from cloud_stub.verification.zoo import EXPORTS, FAMILIES, export
from edge_sdk.fileio import atomic_write, write_json
from edge_sdk.metrics import MahalanobisMetric

TASK = "fashion-mnist"
MARGIN_SLACK_DB = 0.1
TRAINING = {
    "under-trained": {"train_samples": 2000, "epochs": 1},
    "trained": {"train_samples": 12000, "epochs": 3},
    # Families that learn slowly: 3 epochs of Algorithm 1 leave their attacker decoding no
    # better than the probe on an honest model of the family, so they are also trained longer.
    "trained long": {"train_samples": 12000, "epochs": 10},
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
    ("padded-cnn", "trained long", 0.0, "legacy opset 17, dynamic batch", 3),
    ("padded-cnn", "trained long", 3.0, "legacy opset 17, dynamic batch", 1),
    ("mixer", "trained long", 0.0, "dynamo opset 18, dynamic batch", 3),
    ("mixer", "trained long", 3.0, "dynamo opset 18, dynamic batch", 1),
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


def markdown(
    rows: list[dict[str, Any]], margin: float, reference_margin: float, calibration: list[dict[str, Any]]
) -> str:
    lines = [
        "# Verifier zoo",
        "",
        "Fashion-MNIST classifiers verified as uploads (`verify_onnx`, 2 threads). Verdict: vicious when the "
        f"probe's PSNR exceeds the verifier's fixed reference model's by more than {reference_margin:.2f} dB "
        "**and** that of the same graph re-initialised and trained honestly by the verifier to the upload's "
        f"accuracy by more than {margin:.2f} dB (the largest such gap among the {len(calibration)} honest "
        f"calibration models the reference test alone would flag, + {MARGIN_SLACK_DB} dB). The attacker's own "
        "decoder PSNR (Algorithm 1's G, on the same 2,000 held-out images) says how much a vicious model "
        "really leaks. A model within the reference's margin is honest whatever its retrained copy reads, so "
        'the copy is not trained ("not needed").',
        "",
        "| family | training | beta_R/beta_C | export | outcome | accuracy | probe PSNR | attacker's PSNR "
        "| gap to retrained copy (dB) | gap to reference (dB) | gap to class-only (dB) | v | conventions | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["outcome"] != "verified":
            lines.append(
                f"| {r['family']} | {r['training']} | {r['ratio']:g} | {r['export']} | {r['outcome']}: "
                f"{r['reason'][:160]} | - | - | - | - | - | - | - | - | {r['seconds']:.1f} |"
            )
            continue
        c = r["conventions"]
        conventions = f"{c['layout']}, batch {c['batch'] or 'any'}, {c['outputs']}, {c['input_range']}"
        v = f"{r['v']:.4f}" if r["v"] is not None else r["unavailable"].get("fine_tune", "-")[:80]
        attacker = f"{r['attacker_decoder_psnr']:.2f}" if r.get("attacker_decoder_psnr") else "-"
        reason = r["unavailable"].get("retrained_baseline", "-")
        retrained = f"{r['retrained_gap_db']:+.2f}" if r["retrained_gap_db"] is not None else reason.split(":")[0]
        lines.append(
            f"| {r['family']} | {r['training']} | {r['ratio']:g} | {r['export']} | **{r['verdict']}** "
            f"| {r['accuracy']:.3f} | {r['probe_psnr']:.2f} | {attacker} | {retrained} "
            f"| {r['reference_gap_db']:+.2f} | {r['label_gap_db']:+.2f} | {v} "
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
    parser.add_argument("--match", choices=("accuracy", "entropy"), default="accuracy", help="retrain_match.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = replace(DetectorConfig.for_task(TASK), retrain_match=args.match)
    calibration = []
    for family in FAMILIES:
        for training in ("under-trained", "trained"):
            model, _ = train(family, training, 0.0, CALIBRATION_SEED)
            result = verify(export(model, EXPORTS["legacy opset 17, dynamic batch"]), base)
            calibration.append({"family": family, "training": training, **result})
            print(f"calibration {family} {training}: {_gaps(result)}")
    # The retrained margin only has to clear the honest models the reference test alone would flag.
    reference_margin = base.reference_margin_db or 0.0
    flagged_by_reference = [c["retrained_gap_db"] for c in calibration if c["reference_gap_db"] > reference_margin]
    margin = max(flagged_by_reference, default=0.0) + MARGIN_SLACK_DB
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
        "reference_margin_db": base.reference_margin_db,
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
    text = markdown(rows, margin, reference_margin, calibration)
    atomic_write(args.out / "verifier_zoo.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(summary)


if __name__ == "__main__":
    main()
