from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.errors import FeatureFileError, OutputWriteError
from edge_sdk.fileio import atomic_write, read_features, write_features


def test_feature_file_round_trip_without_pickle(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(3, 2, 4, 4)).astype(np.float32)
    path = write_features(tmp_path / "f.npz", features=features, files=["a.png", "b/c.jpg", "d.pgm"], config={"k": 1})
    with np.load(path, allow_pickle=False) as data:
        assert data["features"].dtype == np.float32
    back = read_features(path)
    assert np.array_equal(back.features, features)
    assert back.files == ["a.png", "b/c.jpg", "d.pgm"]
    assert back.config == {"k": 1}


def test_full_disk_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("previous")

    def fill_disk(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError, match="No space left"):
        atomic_write(target, fill_disk)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unreadable_feature_files(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FeatureFileError, match="not a readable"):
        read_features(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(FeatureFileError, match="missing array"):
        read_features(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="2 features but 1"):
        write_features(tmp_path / "x.npz", features=np.zeros((2, 1)), files=["a"], config={})
