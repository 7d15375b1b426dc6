"""Folder jobs: incremental writes, resume after an interruption, no partial output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_sdk.data.folder import FolderImages
from edge_sdk.data.images import ImageSpec
from edge_sdk.fileio import read_features
from edge_sdk.jobs import ResumeMismatchError, run_folder_job

SPEC = ImageSpec(size=16)


def _folder(root: Path, n: int = 7) -> Path:
    root.mkdir()
    for i in range(n):
        Image.new("L", (20, 24), 30 * i).save(root / f"{i:02d}.png")
    (root / "bad.png").write_bytes(b"broken")
    return root


def _mean_pixel(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
    return batch.images.mean(dim=(2, 3)).numpy(), {"n": len(batch.files)}


def test_job_writes_features_in_file_order_and_removes_its_parts(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out.npz"
    result = run_folder_job(
        folder, out, spec=SPEC, transform=_mean_pixel, batch_size=3, config={"c": 1}, progress=False
    )
    data = read_features(out)
    assert data.files == [f"{i:02d}.png" for i in range(7)]
    assert data.features.shape == (7, 1)
    assert result.skipped == [{"file": "bad.png", "reason": "not a readable image"}]
    assert not (tmp_path / "out.npz.parts").exists()
    diagnostics = json.loads(out.with_suffix(".json").read_text())
    assert diagnostics["batches"] == 3 and [b["n"] for b in diagnostics["per_batch"]] == [3, 3, 1]


def test_interrupted_job_leaves_no_output_and_resumes_without_redoing_batches(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out.npz"
    calls: list[int] = []

    def flaky(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
        calls.append(len(batch.files))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _mean_pixel(batch)

    with pytest.raises(KeyboardInterrupt):
        run_folder_job(folder, out, spec=SPEC, transform=flaky, batch_size=3, config={}, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "out.npz.parts").iterdir()) == [
        "batch_00000.json",
        "batch_00000.npz",
        "state.json",
    ]
    result = run_folder_job(folder, out, spec=SPEC, transform=flaky, batch_size=3, config={}, progress=False)
    assert result.resumed_batches == 1
    assert calls == [3, 3, 3, 1]  # the first batch was not redone
    reference = tmp_path / "ref.npz"
    run_folder_job(folder, reference, spec=SPEC, transform=_mean_pixel, batch_size=3, config={}, progress=False)
    assert np.array_equal(read_features(out).features, read_features(reference).features)


def test_resume_with_other_settings_is_refused_unless_restarted(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out.npz"

    def stop(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_folder_job(folder, out, spec=SPEC, transform=stop, batch_size=3, config={"beta": 1}, progress=False)
    with pytest.raises(ResumeMismatchError, match="--restart"):
        run_folder_job(folder, out, spec=SPEC, transform=_mean_pixel, batch_size=3, config={"beta": 2}, progress=False)
    result = run_folder_job(
        folder, out, spec=SPEC, transform=_mean_pixel, batch_size=3, config={"beta": 2}, restart=True, progress=False
    )
    assert result.images == 7 and result.resumed_batches == 0
