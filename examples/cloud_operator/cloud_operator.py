"""A cloud operator's day: start the stub, verify an honest and a vicious classifier, train a head.

    .venv/bin/python examples/cloud_operator/cloud_operator.py --quick

1. Starts the cloud stub (SQLite in a temporary folder) and issues an API key.
2. Trains two Fashion-MNIST classifiers with the project's own code: an honest one and
   a vicious one (paper Algorithm 1, beta_R/beta_C = 3, which hides the image in its
   logits), exports both to ONNX, uploads them, and reads the verification reports.
3. Collects crafted features of public ORL faces with their pose labels (as devices in
   the development scenario would), trains a new head on them, and serves it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cloud_stub import Store
from cloud_stub.local import local_server
from cloud_stub.verification.tasks import FASHION_MNIST_DIR
from cloud_stub.verification.vicious import ViciousConfig, train_vicious
from edge_sdk.client import CloudClient
from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.data.orl import load_orl
from edge_sdk.kit import load_kit
from exporters.onnx_export import module_to_onnx


def onnx_bytes(model: torch.nn.Module) -> bytes:
    """The classifier as the ONNX file a model developer would upload."""
    return module_to_onnx(model, torch.rand(2, 1, 28, 28)).SerializeToString()


def wait_for_report(client: CloudClient, model_id: int, timeout: float = 900) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (record := client.model_report(model_id))["status"] in ("unverified", "verifying"):
        if time.monotonic() > deadline:
            raise SystemExit(f"model {model_id} still {record['status']} after {timeout} s")
        time.sleep(1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small models, quick verification budget (for CI).")
    args = parser.parse_args()
    torch.set_num_threads(2)
    samples, faces_to_craft = (3000, 60) if args.quick else (12000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'cloud.db'}"
        key = Store(url).create_api_key("operator")
        server_args = ("--torch-threads", "2", "--verify-budget", "quick" if args.quick else "standard")
        with (
            local_server(url, log=work / "server.log", extra_args=server_args) as base,
            CloudClient(base, api_key=key, timeout=60) as client,
        ):
            print(f"cloud stub at {base}: {client.version()['service']} {client.version()['version']}")

            # 2. Verify an honest and a vicious classifier.
            if FASHION_MNIST_DIR.is_dir():
                uploads = {}
                for name, beta_r in (("honest", 0.0), ("vicious", 3.0)):
                    config = ViciousConfig(beta_r=beta_r, train_samples=samples, epochs=3 if args.quick else 2, seed=3)
                    trained = train_vicious("fashion-mnist", config)
                    record = client.upload_model(
                        onnx_bytes(trained.classifier), task="fashion-mnist", name=f"{name}.onnx"
                    )
                    uploads[name] = record["id"]
                    print(
                        f"uploaded {name}.onnx as model {record['id']} ({record['size_bytes']} bytes, "
                        f"{record['status']})"
                    )
                for name, model_id in uploads.items():
                    report = wait_for_report(client, model_id)["report"]
                    assert isinstance(report, dict)
                    v = "not computed" if report["v"] is None else f"{report['v']:.4f}"
                    print(
                        f"{name}.onnx -> {report.get('verdict', report.get('error'))}: accuracy "
                        f"{report['accuracy']:.3f}, v {v}, entropy {report['entropy']:.3f}, "
                        f"probe PSNR {report['probe']['psnr']:.2f} dB (gap {report['psnr_gap_db']:+.2f} dB), "
                        f"{report['seconds']:.0f} s"
                    )
            else:
                print(f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}); apt-get install dataset-fashion-mnist")

            # 3. Collect crafted features with labels, train a head on them, serve it.
            kit = load_kit()
            faces = load_orl("public")
            crafter = Crafter(kit, CrafterConfig(steps=3, inversion_steps=5, final_inversion_steps=10))
            for start in range(0, faces_to_craft, 20):
                crafted = crafter.craft(images=faces.images[start : start + 20]).features
                stored = client.upload_samples("pose-crafted", crafted, faces.pose[start : start + 20])
            print(f"collected {stored['total']} crafted features in dataset 'pose-crafted'")
            job = client.wait_for_job(client.train_head("pose-crafted", epochs=30)["id"], timeout=600)
            print(
                f"trained head {job['head_id']} on crafted features: validation accuracy "
                f"{job['val_accuracy']:.3f}; now serving head {client.version()['active_head_id']}"
            )


if __name__ == "__main__":
    main()
