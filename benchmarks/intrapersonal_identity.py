"""How much identity the kit's intrapersonal coordinates carry: nearest person mean on the private people.

    .venv/bin/python benchmarks/intrapersonal_identity.py --out benchmarks/results/intrapersonal_identity.json

Gallery: each private person's mean over their private-train pictures (images 1-6 of
s21-s40); probes: the private-test pictures (images 7-10); the answer is the nearest
mean (Euclidean). Run on the kit's 16 intrapersonal coordinates, on the whole raw
feature, and on a random 16-dimensional orthonormal projection of it (chance 0.05).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edge_sdk.data.orl import load_orl
from edge_sdk.fileio import write_json
from edge_sdk.kit import load_kit


def nearest_mean_accuracy(
    train: torch.Tensor, train_id: torch.Tensor, test: torch.Tensor, test_id: torch.Tensor
) -> float:
    """Share of ``test`` rows whose nearest per-person mean of ``train`` is their own person."""
    people = train_id.unique()
    means = torch.stack([train[train_id == p].mean(0) for p in people])
    return float((people[torch.cdist(test, means).argmin(1)] == test_id).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/intrapersonal_identity.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    kit = load_kit()
    if kit.intrapersonal is None:
        raise SystemExit("the kit has no intrapersonal subspace")
    train, test = load_orl("private-train", spec=kit.spec), load_orl("private-test", spec=kit.spec)
    raw_train, raw_test = kit.encode(train.images).flatten(1), kit.encode(test.images).flatten(1)
    rank = kit.intrapersonal.rank
    random_basis, _ = torch.linalg.qr(torch.randn(raw_train.shape[1], rank, generator=torch.Generator().manual_seed(0)))
    views = {
        f"{rank} intrapersonal coordinates": kit.intrapersonal.basis,
        f"random {rank}-dimensional projection": random_basis,
        "whole raw feature": None,
    }
    rows = []
    for name, basis in views.items():
        a, b = (raw_train, raw_test) if basis is None else (raw_train @ basis, raw_test @ basis)
        rows.append({"view": name, "identity_accuracy": nearest_mean_accuracy(a, train.identity, b, test.identity)})
    write_json(args.out, {"probes": len(test), "people": len(train.identity.unique()), "chance": 0.05, "rows": rows})
    print("| features | identity accuracy, nearest person mean (chance 0.05) |\n|---|---|")
    for row in rows:
        print(f"| {row['view']} | {row['identity_accuracy']:.3f} |")


if __name__ == "__main__":
    main()
