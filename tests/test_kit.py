from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TINY, make_tiny_kit
from edge_sdk.errors import (
    KitChecksumError,
    KitFileMissingError,
    KitManifestError,
    KitNotFoundError,
    KitWeightsError,
    NonFiniteError,
    TensorShapeError,
)
from edge_sdk.kit import Kit, load_kit, save_kit


def _edit_manifest(folder: Path, edit: Any) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_round_trip_is_bit_identical(tmp_path: Path, tiny_kit: Kit) -> None:
    first = save_kit(tiny_kit, tmp_path / "a")
    loaded = load_kit(tmp_path / "a")
    for name, module in tiny_kit.components().items():
        before, after = module.state_dict(), loaded.components()[name].state_dict()
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(before[key], after[key]), (name, key)
    save_kit(loaded, tmp_path / "b")
    for name in first.manifest.files:
        assert (tmp_path / "a" / f"{name}.safetensors").read_bytes() == (
            tmp_path / "b" / f"{name}.safetensors"
        ).read_bytes()
    assert loaded.manifest.architecture == TINY
    assert not any(m.training for m in loaded.components().values()), "loaded networks must be in eval mode"


def test_saved_manifest_records_checksums_and_versions(tiny_kit_dir: Path) -> None:
    data = json.loads((tiny_kit_dir / "manifest.json").read_text())
    assert data["format"] == "edge-sdk-kit"
    assert data["feature_shape"] == [4, 4, 4]
    assert set(data["files"]) == {"encoder", "head", "generator", "critic", "amortizer", "intrapersonal"}
    assert all(len(entry["sha256"]) == 64 for entry in data["files"].values())
    assert {"edge_sdk", "torch"} <= set(data["versions"])


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(KitNotFoundError, match="does not exist"):
        load_kit(tmp_path / "nope")
    with pytest.raises(KitNotFoundError, match=r"no manifest\.json"):
        load_kit(tmp_path)


def test_manifest_that_is_not_json(tiny_kit_dir: Path) -> None:
    (tiny_kit_dir / "manifest.json").write_text("{not json")
    with pytest.raises(KitManifestError, match="not valid JSON"):
        load_kit(tiny_kit_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("architecture"), "missing field 'architecture'"),
        (lambda d: d.update(format="something-else"), "field 'format'"),
        (lambda d: d.update(format_version=99), "unsupported format_version"),
        (lambda d: d["architecture"].update(latent_dim="eight"), r"architecture\.latent_dim"),
        (lambda d: d["architecture"].update(image_size=20), "power of two"),
        (lambda d: d["architecture"].pop("latent_dim"), "missing field"),
        (lambda d: d["architecture"].update(extra=1), "unknown field"),
        (lambda d: d.update(feature_shape=[8, 4, 4]), "feature_shape"),
        (lambda d: d["image"].update(size=32), "disagree"),
        (lambda d: d["task"].update(classes=["a", "b"]), "classes"),
        (lambda d: d["files"].update(decoder=d["files"]["encoder"]), "unknown component 'decoder'"),
        (lambda d: d["files"].pop("generator"), "required component"),
        (lambda d: d["files"]["encoder"].update(path="../../etc/passwd"), "plain"),
        (lambda d: d["files"]["encoder"].update(sha256="xyz"), "sha256"),
        (lambda d: d.update(name=3), "field 'name' must be str"),
    ],
)
def test_bad_manifest_fields_are_named(tiny_kit_dir: Path, edit: Any, message: str) -> None:
    _edit_manifest(tiny_kit_dir, edit)
    with pytest.raises(KitManifestError, match=message):
        load_kit(tiny_kit_dir)


def test_missing_weights_file(tiny_kit_dir: Path) -> None:
    (tiny_kit_dir / "generator.safetensors").unlink()
    with pytest.raises(KitFileMissingError, match="generator"):
        load_kit(tiny_kit_dir)


def test_altered_weights_fail_the_checksum(tiny_kit_dir: Path) -> None:
    path = tiny_kit_dir / "encoder.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(KitChecksumError, match="encoder"):
        load_kit(tiny_kit_dir)


def test_corrupt_weights_file_without_verification(tiny_kit_dir: Path) -> None:
    (tiny_kit_dir / "amortizer.safetensors").write_bytes(b"\x00" * 12)
    with pytest.raises(KitWeightsError, match="unreadable"):
        load_kit(tiny_kit_dir, verify=False)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    other = make_tiny_kit(arch=TINY.__class__(**{**TINY.__dict__, "encoder_width": 8}))
    save_kit(other, tmp_path / "other")
    save_kit(make_tiny_kit(), tmp_path / "mine")
    shutil.copy(tmp_path / "other" / "encoder.safetensors", tmp_path / "mine" / "encoder.safetensors")
    with pytest.raises(KitWeightsError, match="wrong shape"):
        load_kit(tmp_path / "mine", verify=False)


def test_encode_checks_shape_and_finiteness(tiny_kit: Kit) -> None:
    assert tiny_kit.encode(torch.zeros(2, 1, 16, 16)).shape == (2, 4, 4, 4)
    with pytest.raises(TensorShapeError, match=r"\(batch, 1, 16, 16\)"):
        tiny_kit.encode(torch.zeros(1, 16, 16))
    with pytest.raises(TensorShapeError, match="floating point"):
        tiny_kit.encode(torch.zeros(2, 1, 16, 16, dtype=torch.int64))
    bad = torch.zeros(3, 1, 16, 16)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="1 of 3"):
        tiny_kit.encode(bad)
