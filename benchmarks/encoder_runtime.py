"""Encoder runtime benchmark: torch vs onnxruntime fp32 vs onnxruntime int8 on the CPU.

    .venv/bin/python benchmarks/encoder_runtime.py --out benchmarks/results/encoder_runtime.json

Exports the default kit's encoder (and its int8 version) to a temporary folder,
then times ``encode`` on public-val faces at batch 1 and 32 with 2 threads for every
backend: median milliseconds per call over ``--repeats`` calls after warm-up,
per-image latency and images per second. Also reports model sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edge_sdk.data.orl import load_orl
from edge_sdk.kit import load_kit
from edge_sdk.runtime import EncoderRuntime, OnnxEncoder, TorchEncoder
from exporters.onnx_export import export_component
from exporters.quantize import quantize_encoder


def time_calls(runtime: EncoderRuntime, images: torch.Tensor, repeats: int) -> float:
    """Median seconds per ``encode`` call."""
    for _ in range(5):
        runtime.encode(images)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.encode(images)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_runtime.json"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    faces = load_orl("public-val", spec=kit.spec).images
    images = torch.cat([faces, faces])[:32]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_component(kit, "encoder", Path(tmp) / "encoder.onnx").path
        quant = quantize_encoder(kit, fp32, Path(tmp) / "encoder.int8.onnx")
        runtimes: dict[str, EncoderRuntime] = {
            "torch": TorchEncoder(kit),
            "onnxruntime fp32": OnnxEncoder(fp32, kit),
            "onnxruntime int8": OnnxEncoder(quant.path, kit),
        }
        sizes = {
            "torch": sum(p.numel() * 4 for p in kit.encoder.parameters()),
            "onnxruntime fp32": quant.bytes_fp32,
            "onnxruntime int8": quant.bytes_int8,
        }
        rows = []
        for name, runtime in runtimes.items():
            for batch in (1, 32):
                seconds = time_calls(runtime, images[:batch], args.repeats)
                rows.append(
                    {
                        "backend": name,
                        "batch": batch,
                        "ms_per_call": seconds * 1e3,
                        "ms_per_image": seconds * 1e3 / batch,
                        "images_per_second": batch / seconds,
                        "model_bytes": sizes[name],
                    }
                )
    int8 = {
        "relative_feature_distance": quant.relative_feature_distance,
        "pose_accuracy_fp32": quant.pose_accuracy_fp32,
        "pose_accuracy_int8": quant.pose_accuracy_int8,
    }
    report = {"threads": args.threads, "repeats": args.repeats, "rows": rows, "int8": int8}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'backend':<18}{'batch':>6}{'ms/call':>10}{'ms/img':>9}{'img/s':>9}{'bytes':>9}")
    for r in rows:
        print(
            f"{r['backend']:<18}{r['batch']:>6}{r['ms_per_call']:>10.3f}{r['ms_per_image']:>9.3f}"
            f"{r['images_per_second']:>9.0f}{r['model_bytes']:>9}"
        )
    print(
        f"int8: relative feature distance {int8['relative_feature_distance']:.3f}, pose accuracy "
        f"{int8['pose_accuracy_int8']:.3f} vs fp32 {int8['pose_accuracy_fp32']:.3f} (private-test)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
