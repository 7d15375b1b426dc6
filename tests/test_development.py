"""The development-scenario benchmark: new heads, identity-disjoint folds, retained share, the labels, answer-only."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.crafting.config import PRESETS
from edge_sdk.data.orl import FaceSet, orl_keys
from edge_sdk.evaluation.development import (
    _ATTRIBUTES_CSV,
    DevelopmentTask,
    development_tasks,
    development_utility,
    identity_folds,
    retained_share,
    summarise,
)

pytest.importorskip("sklearn")


def _synthetic(seed: int = 0) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """40 people x 10 faces: a label that varies within each person, written linearly into one coordinate."""
    rng = np.random.default_rng(seed)
    identity = np.repeat(np.arange(40), 10)
    labels = rng.integers(0, 2, size=400)
    person = rng.normal(size=(40, 64))[identity]  # identity dominates the feature
    features = person + 0.3 * rng.normal(size=(400, 64))
    features[:, 0] += 3.0 * (2 * labels - 1)
    return torch.tensor(features, dtype=torch.float32), labels, torch.tensor(identity)


def test_identity_folds_hold_whole_people_and_are_seeded() -> None:
    identity = np.repeat(np.arange(40), 10)
    fold = identity_folds(identity, folds=5, seed=3)
    for person in range(40):
        assert len(set(fold[identity == person])) == 1
    assert sorted(np.bincount(fold).tolist()) == [80] * 5
    assert np.array_equal(fold, identity_folds(identity, folds=5, seed=3))
    assert not np.array_equal(fold, identity_folds(identity, folds=5, seed=4))
    with pytest.raises(ValueError, match="folds"):
        identity_folds(identity, folds=41, seed=0)


def test_retained_share_of_a_linear_label_is_one_and_of_noise_about_zero() -> None:
    raw, labels, identity = _synthetic()
    task = DevelopmentTask("synthetic", labels, 2, "construction")
    rng = torch.Generator().manual_seed(1)
    releases = {
        "copy": raw.clone(),
        "label only": raw[:, :1].repeat(1, 64) + 0.01 * torch.randn(raw.shape, generator=rng),
        "noise": torch.randn(raw.shape, generator=rng),
    }
    scores = development_utility(releases, raw, [task], identity, bootstrap=200, seed=0)
    by = {(s.release, s.family): s for s in scores}
    for family in ("linear", "mlp"):
        assert by[("copy", family)].raw_accuracy > 0.9  # the label is linearly there: heads find it
        assert by[("copy", family)].retained == pytest.approx(1.0)
        assert by[("label only", family)].retained > 0.9
        assert abs(by[("noise", family)].retained) < 0.25  # 400 faces: one standard error is about 0.05
        low, high = by[("noise", family)].accuracy_ci
        assert low < 0.5 < high  # noise: chance inside the interval
        assert by[("copy", family)].accuracy_ci[0] > 0.7  # and chance far below its interval
    summary = summarise(scores, "noise")
    assert abs(summary["mean_retained_unseen"]) < 0.25


def test_development_utility_is_reproducible_and_checks_its_inputs() -> None:
    raw, labels, identity = _synthetic(seed=2)
    task = DevelopmentTask("synthetic", labels, 2, "construction")
    first = development_utility({"r": raw}, raw, [task], identity, families=("linear",), bootstrap=50, seed=5)
    again = development_utility({"r": raw}, raw, [task], identity, families=("linear",), bootstrap=50, seed=5)
    assert [s.to_json() for s in first] == [s.to_json() for s in again]
    with pytest.raises(ValueError, match="shape"):
        development_utility({"r": raw[:, :3]}, raw, [task], identity)
    with pytest.raises(ValueError, match="families"):
        development_utility({"r": raw}, raw, [task], identity, families=("forest",))


def test_retained_share_arithmetic() -> None:
    assert retained_share(0.75, 1.0, 0.5) == pytest.approx(0.5)
    assert retained_share(0.5, 1.0, 0.5) == 0.0
    assert np.isnan(retained_share(0.6, 0.5, 0.5))


def test_the_labellers_file_covers_every_orl_face_in_range() -> None:
    with _ATTRIBUTES_CSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["subject"]), int(r["image"])) for r in rows] == orl_keys("all")
    assert set(rows[0]) == {"subject", "image", "pitch", "mouth_width", "age", "female"}
    for row in rows:
        assert 0.3 < float(row["pitch"]) < 0.8  # the nose lies between the eye line and the mouth line
        assert 0.5 < float(row["mouth_width"]) < 1.2
        assert 10 <= float(row["age"]) <= 90
        assert 0.0 <= float(row["female"]) <= 1.0
    # ORL's four women (s8, s10, s32, s35) are the labeller's, most of their pictures called female.
    female = {s: np.mean([float(r["female"]) > 0.5 for r in rows if int(r["subject"]) == s]) for s in range(1, 41)}
    assert {s for s, share in female.items() if share > 0.5} == {8, 10, 32, 35}


def test_development_tasks_split_attributes_at_their_median() -> None:
    keys = orl_keys("all")
    faces = FaceSet(
        images=torch.zeros(len(keys), 1, 2, 2),
        identity=torch.tensor([s - 1 for s, _ in keys]),
        image_index=torch.tensor([i for _, i in keys]),
        pose=torch.tensor([k % 3 for k in range(len(keys))]),
    )
    tasks = {t.name: t for t in development_tasks(faces)}
    assert list(tasks) == ["pose", "pitch", "mouth_width", "age", "female"]
    assert tasks["pose"].seen_by_kit and tasks["pose"].classes == 3
    for name in ("pitch", "mouth_width", "age"):
        assert not tasks[name].seen_by_kit
        assert 0.4 < tasks[name].labels.mean() < 0.6
    assert tasks["female"].labels.sum() == 44


def test_answer_only_release_keeps_the_head_answer_and_nothing_else(tiny_kit) -> None:
    images = torch.rand(6, tiny_kit.spec.channels, tiny_kit.spec.size, tiny_kit.spec.size) * 2 - 1
    config = PRESETS["answer-only"](seed=0, prior_samples=16)
    result = Crafter(tiny_kit, config).craft(images=images)
    again = Crafter(tiny_kit, config).craft(images=images)
    assert torch.equal(result.features, again.features)  # seeded: same inputs, same release
    with torch.no_grad():
        kept = tiny_kit.head(result.features).argmax(1)
        answers = tiny_kit.head(result.raw_features).argmax(1)
    assert torch.equal(kept, answers)
    # One release per answer: two faces with the same answer are released identically.
    for a in answers.unique():
        same = result.features[answers == a]
        assert torch.equal(same, same[:1].expand_as(same))
    other = Crafter(tiny_kit, replace(config, seed=1)).craft(images=images)
    assert not torch.equal(other.features, result.features)


def test_answer_only_needs_a_head(tiny_kit) -> None:
    from edge_sdk.errors import KitError

    headless = replace(tiny_kit, head=None)
    with pytest.raises(KitError, match="head"):
        Crafter(headless, CrafterConfig(method="answer-only", utility="feature")).craft(
            images=torch.zeros(2, tiny_kit.spec.channels, tiny_kit.spec.size, tiny_kit.spec.size)
        )
