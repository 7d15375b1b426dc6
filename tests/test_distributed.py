"""Crafting a folder on Ray Data gives the single-process command's features, shard by shard, resumably."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_sdk.cli import app
from edge_sdk.console import EXIT_BAD_INPUT
from edge_sdk.data.orl import orl_root
from edge_sdk.distributed import _repeats
from edge_sdk.errors import FeatureFileError
from edge_sdk.fileio import SHARD_MANIFEST, iter_feature_shards, read_features, write_features, write_shard_manifest

runner = CliRunner()


def test_a_face_seen_in_an_earlier_batch_points_at_its_first_release() -> None:
    digests = {0: ["a", "b", "a"], 1: ["c", "b"], 2: ["a", "c", "d"]}
    # Within a batch the crafter itself answers repeats; across batches the first occurrence wins.
    assert _repeats(digests) == {1: [(1, 0, 1)], 2: [(0, 0, 0), (1, 1, 0)]}


def test_a_folder_of_shards_reads_whole_and_refuses_unfinished_or_inconsistent_work(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    rows = [np.full((n, 2), i, np.float32) for i, n in enumerate((2, 0, 3))]
    paths = []
    for i, features in enumerate(rows):
        names = [f"{i}_{j}.png" for j in range(len(features))]
        paths.append(write_features(out / f"batch_{i:05d}.npz", features=features, files=names, config={"k": 1}))
    with pytest.raises(FeatureFileError, match="unfinished"):
        read_features(out)
    write_shard_manifest(out, paths, skipped=[{"file": "x.png", "reason": "not a readable image"}])
    whole = read_features(out)
    assert whole.features.shape == (5, 2) and whole.files[2] == "2_0.png" and whole.config == {"k": 1}
    assert [len(s.files) for s in iter_feature_shards(out)] == [2, 3]
    write_features(paths[2], features=rows[2][:1], files=["2_0.png"], config={"k": 1})
    with pytest.raises(FeatureFileError, match="the manifest says 3"):
        read_features(out)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (extra 'ray')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _craft(folder: Path, out: Path, kit: Path, *extra: str) -> list[str]:
    common = ["--kit", str(kit), "--no-align", "--batch-size", "32", "--steps", "3", "-q"]
    return ["craft", str(folder), "--out", str(out), *common, *extra]


@pytest.mark.slow
def test_ray_crafting_gives_the_single_process_features_and_resumes_shard_by_shard(
    tmp_path: Path, tiny_kit_dir: Path, local_ray: None
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for subject in range(1, 31):  # 300 pictures of 30 people, 10 batches
        for i in range(1, 11):
            shutil.copyfile(orl_root() / f"s{subject}" / f"{i}.pgm", folder / f"s{subject:02d}_{i:02d}.pgm")
    # Repeats across batches (a copy far from its original) and a picture that does not decode.
    shutil.copyfile(orl_root() / "s1" / "1.pgm", folder / "zz_copy_of_s01_01.pgm")
    shutil.copyfile(orl_root() / "s2" / "5.pgm", folder / "s29_99.pgm")
    (folder / "s15_broken.png").write_bytes(b"not a picture")

    single = runner.invoke(app, _craft(folder, tmp_path / "single.npz", tiny_kit_dir, "--threads", "1"))
    assert single.exit_code == 0, single.output
    out = tmp_path / "sharded"
    result = runner.invoke(app, _craft(folder, out, tiny_kit_dir, "--ray", "--actors", "2"))
    assert result.exit_code == 0, result.output
    assert "crafted 302 faces" in result.output and "s15_broken.png" in result.output

    expected, sharded = read_features(tmp_path / "single.npz"), read_features(out)
    assert sharded.files == expected.files and sharded.faces == expected.faces
    np.testing.assert_array_equal(sharded.features, expected.features)
    row = {f: i for i, f in enumerate(sharded.files)}
    np.testing.assert_array_equal(sharded.features[row["zz_copy_of_s01_01.pgm"]], sharded.features[row["s01_01.pgm"]])
    np.testing.assert_array_equal(sharded.features[row["s29_99.pgm"]], sharded.features[row["s02_05.pgm"]])
    manifest = json.loads((out / SHARD_MANIFEST).read_text())
    assert manifest["rows"] == 302 and len(manifest["shards"]) == 10
    assert manifest["skipped"] == [{"file": "s15_broken.png", "reason": "not a readable image"}]

    # An interruption: the manifest and two shards (one holding a repeat) never written.
    (out / SHARD_MANIFEST).unlink()
    for index in (3, 9):
        (out / f"batch_{index:05d}.npz").unlink()
    resumed = runner.invoke(app, _craft(folder, out, tiny_kit_dir, "--ray", "--actors", "2"))
    assert resumed.exit_code == 0, resumed.output
    assert "8 batch(es) resumed" in resumed.output
    np.testing.assert_array_equal(read_features(out).features, expected.features)

    other = runner.invoke(app, _craft(folder, out, tiny_kit_dir, "--ray", "--seed", "1"))
    assert other.exit_code == EXIT_BAD_INPUT and "--restart" in other.output


def test_ray_crafting_never_writes_over_or_deletes_what_is_not_its_own(tmp_path: Path, tiny_kit_dir: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copyfile(orl_root() / "s1" / "1.pgm", folder / "a.pgm")
    a_file, other = tmp_path / "crafted.npz", tmp_path / "results"
    a_file.write_bytes(b"an earlier output")
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for out, message in ((a_file, "a file"), (folder, "holds the pictures"), (tmp_path, "holds the pictures")):
        result = runner.invoke(app, _craft(folder, out, tiny_kit_dir, "--ray"))
        assert result.exit_code == EXIT_BAD_INPUT and message in result.output
    for extra in ((), ("--restart",)):
        result = runner.invoke(app, _craft(folder, other, tiny_kit_dir, "--ray", *extra))
        assert result.exit_code == EXIT_BAD_INPUT and "not this job's shards" in result.output
    assert (other / "notes.txt").read_text() == "mine" and a_file.read_bytes() == b"an earlier output"


def test_ray_crafting_refuses_options_of_the_single_device(tmp_path: Path, tiny_kit_dir: Path) -> None:
    result = runner.invoke(
        app, _craft(tmp_path, tmp_path / "out", tiny_kit_dir, "--ray", "--cache", str(tmp_path / "c.db"))
    )
    assert result.exit_code != 0 and "--ray writes shards only" in result.output


@pytest.mark.slow
def test_a_shard_that_cannot_be_written_is_a_typed_error_and_the_rest_is_kept(
    tmp_path: Path, tiny_kit_dir: Path, local_ray: None
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(1, 7):
        shutil.copyfile(orl_root() / "s3" / f"{i}.pgm", folder / f"{i}.pgm")
    out = tmp_path / "sharded"
    args = [*_craft(folder, out, tiny_kit_dir, "--ray", "--actors", "1"), "--batch-size", "2"]
    assert runner.invoke(app, args).exit_code == 0
    (out / SHARD_MANIFEST).unlink()
    (out / "batch_00001.npz").unlink()
    (out / "batch_00001.npz").mkdir()  # where the second shard goes: not writable as a file
    failed = runner.invoke(app, args)
    assert failed.exit_code == EXIT_BAD_INPUT and "batch_00001.npz: could not write" in failed.output
    assert not (out / SHARD_MANIFEST).exists()
    (out / "batch_00001.npz").rmdir()
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0 and "2 batch(es) resumed" in resumed.output
