"""What a release that keeps a few coordinates of the raw feature gives away and keeps, before any crafting.

    .venv/bin/python benchmarks/intrapersonal_identity.py --out benchmarks/results/intrapersonal_identity.json

The intrapersonal release keeps the raw feature's coordinates in a 16-dimensional
subspace and crafts the rest from a fresh latent. This screens subspaces (and noise
added to the kept coordinates) by what those coordinates alone carry, with no crafting
and no attack, so each row costs a minute instead of a frontier run:

* **identity**, on the 20 private people: the nearest person mean (gallery: each
  person's mean over their private-train pictures, images 1-6; probes: the
  private-test pictures, 7-10) and a logistic-regression probe trained on the
  private-train coordinates (chance 0.05);
* **utility for tasks the kit never saw**: new heads (the frontier's linear and MLP
  families, identity-disjoint 5-fold cross-validation over the 40 people) trained on
  the kept coordinates written back as a feature, retained share of what they learn
  from the whole raw feature (mean and minimum over pitch, mouth width and age).

Subspaces (all fitted on the 200 public faces of the 20 public people only): the kit's
intrapersonal subspace (principal directions around each person's mean), the same with
the span of the public people's means removed first, the Fisher-ratio directions
(largest within-person over between-person variance, ridge-regularised), and a random
projection. Noise rows add Gaussian noise to the intrapersonal coordinates, shaped as
the public between-person covariance or isotropic with the same power.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from edge_sdk.data.orl import FaceSet, load_orl
from edge_sdk.evaluation.development import development_tasks, development_utility, summarise
from edge_sdk.fileio import write_json
from edge_sdk.kit import load_kit


def nearest_mean_accuracy(
    train: torch.Tensor, train_id: torch.Tensor, test: torch.Tensor, test_id: torch.Tensor
) -> float:
    """Share of ``test`` rows whose nearest per-person mean of ``train`` is their own person."""
    people = train_id.unique()
    means = torch.stack([train[train_id == p].mean(0) for p in people])
    return float((people[torch.cdist(test, means).argmin(1)] == test_id).float().mean())


def probe_accuracy(train: torch.Tensor, train_id: torch.Tensor, test: torch.Tensor, test_id: torch.Tensor) -> float:
    """Accuracy of a logistic-regression identity probe trained on ``train`` and tested on ``test``."""
    probe = LogisticRegression(C=1.0, max_iter=3000).fit(train.numpy(), train_id.numpy())
    return float(probe.score(test.numpy(), test_id.numpy()))


def person_means(rows: torch.Tensor, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each person's mean row ``(P, D)`` of ``rows`` ``(N, D)``, and each row's person index ``(N,)``."""
    people, index = torch.unique(identity, return_inverse=True)
    return torch.stack([rows[index == k].mean(0) for k in range(len(people))]), index


def top_directions(rows: torch.Tensor, rank: int) -> torch.Tensor:
    """``(D, rank)`` orthonormal principal directions of ``rows`` ``(N, D)`` (not centred)."""
    return torch.linalg.svd(rows, full_matrices=False)[2][:rank].T


def subspaces(public: torch.Tensor, identity: torch.Tensor, *, rank: int) -> dict[str, torch.Tensor]:
    """The other ``(D, rank)`` bases screened, fitted on public features ``(N, D)`` of people ``identity``."""
    means, index = person_means(public, identity)
    residuals = public - means[index]
    between = top_directions(means - means.mean(0), len(means) - 1)
    # Fisher ratio within / (between + ridge) in the span of the public features.
    span = top_directions(public - public.mean(0), len(public) - 1)
    within_cov = (residuals @ span).T @ (residuals @ span) / (len(public) - len(means))
    centred_means = (means - means.mean(0)) @ span
    between_cov = centred_means.T @ centred_means / (len(means) - 1)
    ridge = between_cov + float(torch.trace(between_cov)) / len(between_cov) * torch.eye(len(between_cov)).to(public)
    inverse_root = torch.linalg.inv(torch.linalg.cholesky(ridge))
    _, vectors = torch.linalg.eigh(inverse_root @ within_cov @ inverse_root.T)
    fisher, _ = torch.linalg.qr(span @ (inverse_root.T @ vectors[:, -rank:]))
    random, _ = torch.linalg.qr(
        torch.randn(public.shape[1], rank, generator=torch.Generator().manual_seed(0)).to(public)
    )
    return {
        "intrapersonal, public people's mean span removed": top_directions(
            residuals - (residuals @ between) @ between.T, rank
        ),
        "Fisher ratio, within over between (ridge)": fisher,
        f"random {rank}-dimensional projection": random,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/intrapersonal_identity.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    kit = load_kit()
    if kit.intrapersonal is None:
        raise SystemExit("the kit has no intrapersonal subspace")
    test, train = load_orl("private-test", spec=kit.spec), load_orl("private-train", spec=kit.spec)
    public = load_orl("public", spec=kit.spec)
    everyone = FaceSet.joined(test, train, public)
    raw = kit.encode(everyone.images)
    flat = raw.flatten(1).double()
    public_flat = flat[len(test) + len(train) :]
    tasks = development_tasks(everyone)
    rank = kit.intrapersonal.rank
    kit_basis = kit.intrapersonal.basis.double()
    bases = {f"kit's intrapersonal subspace ({rank})": kit_basis}
    bases.update(subspaces(public_flat, public.identity, rank=rank))
    kept = public_flat @ kit_basis
    means, _ = person_means(kept, public.identity)
    between_root = torch.linalg.cholesky(torch.cov((means - means.mean(0)).T) + 1e-9 * torch.eye(rank).to(kept))
    power = float(torch.trace(between_root @ between_root.T)) / rank
    noise = torch.randn(len(flat), rank, generator=torch.Generator().manual_seed(1)).to(kept)

    # Each view: the basis kept (None: the whole feature) and noise added to its coordinates.
    views: dict[str, tuple[torch.Tensor | None, torch.Tensor | float]] = {"whole raw feature": (None, 0.0)}
    views.update({name: (basis, 0.0) for name, basis in bases.items()})
    for scale in (1.0, 2.0):
        views[f"intrapersonal + noise shaped as public between-person covariance x{scale:g}"] = (
            kit_basis,
            scale * noise @ between_root.T,
        )
        views[f"intrapersonal + isotropic noise of the same power x{scale:g}"] = (kit_basis, scale * noise * power**0.5)
    n_test, n_train = len(test), len(train)
    coords = {name: flat if basis is None else flat @ basis + added for name, (basis, added) in views.items()}
    released = {
        name: (coords[name] if basis is None else coords[name] @ basis.T).float().reshape(raw.shape)
        for name, (basis, _) in views.items()
    }
    # One call: the heads on the raw features are trained once for every view.
    scores = development_utility(released, raw, tasks, everyone.identity, bootstrap=args.bootstrap)
    rows = []
    for name, kept_coords in coords.items():
        gallery, probes = kept_coords[n_test : n_test + n_train], kept_coords[:n_test]
        summary = summarise(scores, name)
        row = {
            "view": name,
            "identity_nearest_mean": nearest_mean_accuracy(
                gallery.float(), train.identity, probes.float(), test.identity
            ),
            "identity_probe": probe_accuracy(gallery, train.identity, probes, test.identity),
            **summary,
            "retained_per_task": {
                f"{s.task} {s.family}": s.retained for s in scores if s.release == name and not s.seen_by_kit
            },
        }
        rows.append(row)
        print(
            f"{name}: nearest mean {row['identity_nearest_mean']:.3f}, probe {row['identity_probe']:.3f}, "
            f"unseen retained {summary['mean_retained_unseen']:.2f} ({summary['min_retained_unseen']:.2f})",
            flush=True,
        )
    seconds = time.perf_counter() - started
    write_json(
        args.out,
        {
            "probes": len(test),
            "people": int(np.unique(test.identity.numpy()).size),
            "chance": 0.05,
            "rank": rank,
            "bootstrap": args.bootstrap,
            "seconds": seconds,
            "rows": rows,
        },
    )
    print("\n| kept coordinates | identity, nearest mean | identity, probe | unseen retained: mean (min) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['view']} | {row['identity_nearest_mean']:.3f} | {row['identity_probe']:.3f} | "
            f"{row['mean_retained_unseen']:.2f} ({row['min_retained_unseen']:.2f}) |"
        )
    print(f"\n{seconds:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
