"""Crafting benchmark: seconds per image and the privacy and utility each configuration reaches.

Run from the repository root (2 CPU threads, batch 32, the default kit, ORL private-test):

    .venv/bin/python benchmarks/crafting.py --out benchmarks/results/crafting.json

Configurations: the default (Crafter-z with head utility from a fresh prior latent),
the same started at the attacker's inversion (``latent_noise=0``), the feature-space Crafter
(``CrafterConfig.feature()``) and the paper-faithful one. Per configuration it crafts
the 80 private-test faces, then attacks the released features with a white-box GAN
inversion (amortizer start, Adam, ``--attack-steps``) and with a black-box decoder
trained on public ``(Enc(X'), X')`` pairs (``--decoder-steps``), and reports: seconds
per image, epsilon-PII, the white-box attack's SSIM against the originals, identity
accuracy of both attacks with the project's identity oracle (trained on
private-train; chance 5%), the pose head's accuracy on crafted vs raw features and
their agreement, and the relative feature distortion ``||F - F0|| / ||F0||``. The
full set of attacks and the independent SFace oracle are in ``benchmarks/evaluation.py``.

The paper-faithful configuration (500 feature steps, Neumann 150 terms with alpha
0.001, 600-step inversion, 10 critic steps) costs hours per batch on a CPU, so
``--paper-steps`` runs it for fewer feature steps on ``--paper-images`` images and
extrapolates its time per image to 500 steps (measured time plus the missing steps at the
measured mean step time);
its privacy is reported at the steps actually run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import FaceSet, load_orl
from edge_sdk.evaluation.attacks import DecoderAttack, FeatureDecoder, WhiteBoxInversion, train_feature_decoder
from edge_sdk.evaluation.harness import utility_metrics
from edge_sdk.evaluation.identity import identity_accuracy, train_identity_classifier
from edge_sdk.kit import Kit, load_kit
from edge_sdk.metrics import ssim


def measure(
    kit: Kit,
    faces: FaceSet,
    features: torch.Tensor,
    raw: torch.Tensor,
    oracle: Any,
    attack_steps: int,
    decoder: FeatureDecoder,
) -> dict[str, float]:
    # White-box reconstruction G(z*(F)) from the amortizer's guess with Adam (the harness's attack).
    attack = WhiteBoxInversion(
        "white-box",
        kit.generator,
        kit.encoder,
        amortizer=kit.amortizer,
        steps=attack_steps,
        lr=0.05,
        optimizer="adam",
        batch_size=len(features),
    )
    recon = attack.reconstruct(features)
    decoded = DecoderAttack("decoder", decoder).reconstruct(features)
    return {
        "attack_ssim": float(ssim(to_unit_range(recon, kit.spec), to_unit_range(faces.images, kit.spec)).mean()),
        "attack_identity_accuracy": identity_accuracy(oracle, recon, faces.identity),
        "decoder_identity_accuracy": identity_accuracy(oracle, decoded, faces.identity),
        **utility_metrics(kit, faces, features, raw),
    }


def run_config(
    name: str,
    kit: Kit,
    config: CrafterConfig,
    faces: FaceSet,
    oracle: Any,
    *,
    batch_size: int,
    attack_steps: int,
    decoder: FeatureDecoder,
    full_steps: int | None = None,
) -> dict[str, Any]:
    crafter = Crafter(kit, config)
    crafted, pii, pii_raw, step_seconds = [], [], [], 0.0
    start = time.perf_counter()
    for i in range(0, len(faces), batch_size):
        result = crafter.craft(images=faces.images[i : i + batch_size])
        crafted.append(result.features)
        pii.append(result.diagnostics["epsilon_pii"])
        pii_raw.append(result.diagnostics["epsilon_pii_raw"])
        step_seconds += result.diagnostics["step_seconds"]
        print(
            f"  [{name}] batch {i // batch_size + 1}: {result.diagnostics['seconds']:.1f}s "
            f"eps-PII {pii[-1]:.4f} (raw {pii_raw[-1]:.4f})",
            flush=True,
        )
    seconds = time.perf_counter() - start
    features = torch.cat(crafted)
    raw = kit.encode(faces.images)
    if full_steps is not None:
        # Every feature step costs about the same: add the steps not run to the measured time.
        seconds += (full_steps - config.steps) * step_seconds
    per_image = seconds / len(faces)
    return {
        "name": name,
        "images": len(faces),
        "seconds_per_image": per_image,
        "seconds_measured": seconds,
        "extrapolated_to_steps": full_steps,
        "epsilon_pii": sum(pii) / len(pii),
        "epsilon_pii_raw": sum(pii_raw) / len(pii_raw),
        **measure(kit, faces, features, raw, oracle, attack_steps, decoder),
        "config": asdict(config),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/crafting.json"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--attack-steps", type=int, default=600)
    parser.add_argument("--decoder-steps", type=int, default=2000)
    parser.add_argument("--paper-steps", type=int, default=2, help="feature steps actually run for the paper config")
    parser.add_argument("--paper-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    test = load_orl("private-test", spec=kit.spec)
    oracle = train_identity_classifier(load_orl("private-train", spec=kit.spec), seed=0)
    raw = kit.encode(test.images)
    decoder = train_feature_decoder(
        kit.encoder, load_orl("public", spec=kit.spec).images, steps=args.decoder_steps, seed=0
    )
    rows = [
        {
            "name": "raw (no defence)",
            "seconds_per_image": 0.0,
            "epsilon_pii": None,
            **measure(kit, test, raw, raw, oracle, args.attack_steps, decoder),
        }
    ]
    oracle_real = identity_accuracy(oracle, test.images, test.identity)
    # The default starts Crafter-z at a fresh prior latent; "paper start" is the same from
    # the attacker's inversion z*(F0) (paper App. F), to show what the fresh start buys.
    configs = (
        ("default", CrafterConfig()),
        ("default, paper start", CrafterConfig(latent_noise=0.0)),
        ("feature", CrafterConfig.feature()),
    )
    for name, config in configs:
        rows.append(
            run_config(
                name,
                kit,
                config,
                test,
                oracle,
                batch_size=args.batch_size,
                attack_steps=args.attack_steps,
                decoder=decoder,
            )
        )
    if not args.skip_paper:
        paper = CrafterConfig.paper()
        subset = FaceSet(*(t[: args.paper_images] for t in (test.images, test.identity, test.image_index, test.pose)))
        rows.append(
            run_config(
                "paper-faithful",
                kit,
                replace(paper, steps=args.paper_steps),
                subset,
                oracle,
                batch_size=args.batch_size,
                attack_steps=args.attack_steps,
                decoder=decoder,
                full_steps=paper.steps,
            )
        )
    report = {
        "oracle_accuracy_on_real_private_test": oracle_real,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "attack_steps": args.attack_steps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    width = max(len("configuration"), *(len(str(r["name"])) for r in rows)) + 2
    columns = [
        ("configuration", width),
        ("s/img", 9),
        ("eps-PII", 9),
        ("SSIM", 7),
        ("ID acc", 8),
        ("dec ID", 8),
        ("pose", 7),
        ("raw pose", 9),
        ("agree", 7),
        ("dist", 7),
    ]
    header = "".join(f"{name:<{w}}" if i == 0 else f"{name:>{w}}" for i, (name, w) in enumerate(columns))
    print(f"\nidentity oracle on real private-test faces: {oracle_real:.3f} (chance 0.05)")
    print(header)
    for r in rows:
        pii = f"{r['epsilon_pii']:.4f}" if r["epsilon_pii"] is not None else "-"
        print(
            f"{r['name']:<{width}}{r['seconds_per_image']:>9.2f}{pii:>9}{r['attack_ssim']:>7.3f}"
            f"{r['attack_identity_accuracy']:>8.3f}{r['decoder_identity_accuracy']:>8.3f}"
            f"{r['pose_accuracy']:>7.3f}{r['pose_accuracy_raw']:>9.3f}"
            f"{r['pose_agreement']:>7.3f}{r['relative_distortion']:>7.3f}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
