from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from edge_sdk.cli import app
from edge_sdk.fileio import read_features

runner = CliRunner()


def _command_paths(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))  # type: ignore[arg-type]


def test_every_expected_command_exists() -> None:
    assert {("encode",), ("evaluate",), ("kit", "info"), ("kit", "train"), ("data", "orl-faces")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "edge-sdk")
def test_help_of_every_command(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_encode_folder_with_a_bad_file(tmp_path: Path, tiny_kit_dir: Path) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("L", (92, 112), 40 * i).save(faces / f"{i}.png")
    (faces / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "feats.npz"
    result = runner.invoke(
        app, ["encode", str(faces), "--out", str(out), "--kit", str(tiny_kit_dir), "-q", "--batch-size", "2"]
    )
    assert result.exit_code == 0, result.output
    data = read_features(out)
    assert data.features.shape == (3, 4, 4, 4)
    assert data.files == ["0.png", "1.png", "2.png"]
    diagnostics = json.loads(out.with_suffix(".json").read_text())
    assert [s["file"] for s in diagnostics["skipped"]] == ["broken.jpg"]
    assert "skipped broken.jpg" in result.output


def test_encode_empty_folder_is_a_clear_error(tmp_path: Path, tiny_kit_dir: Path) -> None:
    result = runner.invoke(app, ["encode", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--kit", str(tiny_kit_dir)])
    assert result.exit_code == 2
    assert "no pictures found" in result.output
    assert not (tmp_path / "x.npz").exists()


def test_kit_info_default_and_broken(tmp_path: Path) -> None:
    result = runner.invoke(app, ["kit", "info"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["feature_shape"] == [32, 16, 16] and info["format"] == "edge-sdk-kit"
    result = runner.invoke(app, ["kit", "info", str(tmp_path)])
    assert result.exit_code == 2 and "no manifest.json" in result.output


def test_data_orl_faces_then_encode_with_the_default_kit(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "orl-faces", "--split", "private-test", "--out", str(tmp_path / "faces")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "faces").glob("*.pgm"))) == 80
    result = runner.invoke(app, ["encode", str(tmp_path / "faces"), "--out", str(tmp_path / "f.npz"), "-q"])
    assert result.exit_code == 0, result.output
    assert read_features(tmp_path / "f.npz").features.shape == (80, 32, 16, 16)
    result = runner.invoke(app, ["data", "orl-faces", "--split", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "unknown split" in result.output


@pytest.mark.slow
def test_kit_train_few_steps_writes_kit_and_report(tmp_path: Path) -> None:
    out = tmp_path / "kit"
    args = [
        "kit",
        "train",
        "--out",
        str(out),
        "--pose-epochs",
        "1",
        "--gan-steps",
        "1",
        "--amortizer-steps",
        "2",
        "--report-inversion-steps",
        "2",
        "--threads",
        "1",
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in (
        "manifest.json",
        "encoder.safetensors",
        "report.json",
        "report.md",
        "generator_samples.png",
        "inversions.png",
        "training_curves.png",
        "training_log.json",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]["pose_accuracy"]) == {"public-train", "public-val", "private-test"}
    assert "pose accuracy private-test" in result.output


def test_craft_folder_resumes_after_an_interruption(tmp_path: Path, tiny_kit_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from edge_sdk.crafting.crafter import Crafter

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(5):
        Image.new("L", (92, 112), 20 + 40 * i).save(faces / f"{i}.png")
    shutil.copyfile(faces / "0.png", faces / "9_copy.png")  # met again in a batch crafted after the resume
    (faces / "broken.png").write_bytes(b"nope")
    out = tmp_path / "crafted.npz"
    args = [
        "craft",
        str(faces),
        "--out",
        str(out),
        "--kit",
        str(tiny_kit_dir),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "-q",
    ]
    original = Crafter.craft
    calls = {"n": 0}

    def interrupted(self, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, **kwargs)

    monkeypatch.setattr(Crafter, "craft", interrupted)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and not out.exists()
    monkeypatch.setattr(Crafter, "craft", original)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 batch(es) resumed" in result.output and "skipped broken.png" in result.output
    data = read_features(out)
    assert data.features.shape == (6, 4, 4, 4) and data.files == [*(f"{i}.png" for i in range(5)), "9_copy.png"]
    # The face released before the interruption is released again, not crafted anew (attack A3).
    assert np.array_equal(data.features[5], data.features[0])
    assert data.config["crafter"]["steps"] == 2
    diagnostics = json.loads(out.with_suffix(".json").read_text())
    assert all("epsilon_pii" in b for b in diagnostics["per_batch"][:3])  # the last batch: broken.png alone
    # The same command from scratch gives the same features: crafting is deterministic.
    again = tmp_path / "again.npz"
    result = runner.invoke(app, [*args[:3], str(again), *args[4:]])
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_features(again).features, data.features)


def test_craft_presets_choose_the_algorithm(tmp_path: Path, tiny_kit_dir: Path) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("L", (92, 112), 30 + 50 * i).save(faces / f"{i}.png")
    methods = {}
    for preset, extra in (("default", []), ("feature", []), ("default", ["--latent-noise", "0"]), ("answer-only", [])):
        out = tmp_path / f"{preset}{len(extra)}.npz"
        result = runner.invoke(
            app,
            [
                "craft",
                str(faces),
                "--out",
                str(out),
                "--kit",
                str(tiny_kit_dir),
                "--steps",
                "2",
                "--preset",
                preset,
                "-q",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        config = read_features(out).config["crafter"]
        methods[preset, len(extra)] = (config["method"], config["utility"], config["steps"], config["latent_noise"])
    assert methods == {
        ("default", 0): ("crafter-z", "head", 2, 1.0),
        ("feature", 0): ("crafter", "feature", 2, 1.0),
        ("default", 2): ("crafter-z", "head", 2, 0.0),
        ("answer-only", 0): ("answer-only", "head", 2, 1.0),
    }


def test_craft_and_encode_run_on_the_threads_asked_for(tmp_path: Path, tiny_kit_dir: Path) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.new("L", (92, 112), 80).save(faces / "a.png")
    for command in ("craft", "encode"):
        torch.set_num_threads(1)
        extra = ["--steps", "1"] if command == "craft" else []
        result = runner.invoke(
            app,
            [
                command,
                str(faces),
                "--out",
                str(tmp_path / f"{command}.npz"),
                "--kit",
                str(tiny_kit_dir),
                "--threads",
                "2",
                "-q",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2
    refused = runner.invoke(app, ["craft", str(faces), "--out", str(tmp_path / "x.npz"), "--threads", "0"])
    assert refused.exit_code != 0 and "threads" in refused.output


def test_craft_rejects_bad_options(tmp_path: Path, tiny_kit_dir: Path) -> None:
    result = runner.invoke(app, ["craft", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--preset", "nope"])
    assert result.exit_code != 0 and "default" in result.output
    result = runner.invoke(app, ["craft", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--solver", "svd"])
    assert result.exit_code != 0 and "solver" in result.output
    result = runner.invoke(app, ["craft", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--latent-noise", "2"])
    assert result.exit_code != 0 and "latent-noise" in result.output


def test_craft_aligns_faces_takes_all_faces_and_no_align_keeps_the_centre_square(tmp_path: Path, tiny_kit) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from edge_sdk.data.orl import orl_root
    from edge_sdk.faces.alignment import ORL_TEMPLATE
    from edge_sdk.kit import save_kit

    spec = dataclasses.replace(tiny_kit.manifest.image, face_template=ORL_TEMPLATE)
    tiny_kit.manifest = dataclasses.replace(tiny_kit.manifest, image=spec)
    kit_dir = tmp_path / "aligned-kit"
    save_kit(tiny_kit, kit_dir)
    photos = tmp_path / "photos"
    photos.mkdir()
    group = Image.new("L", (260, 140), 90)
    for subject, corner in [(22, (10, 10)), (31, (160, 20))]:
        with Image.open(orl_root() / f"s{subject}" / "1.pgm") as face:
            group.paste(face, corner)
    group.save(photos / "group.jpg", quality=95)
    with Image.open(orl_root() / "s24" / "2.pgm") as face:
        face.save(photos / "single.png")
    Image.new("L", (100, 100), 128).save(photos / "wall.png")

    def craft(*extra: str) -> tuple[object, Path]:
        out = tmp_path / f"crafted{len(extra)}{'-'.join(extra)}.npz"
        result = runner.invoke(
            app, ["craft", str(photos), "--out", str(out), "--kit", str(kit_dir), "--steps", "1", "-q", *extra]
        )
        assert result.exit_code == 0, result.output
        return result, out

    result, out = craft()
    data = read_features(out)
    assert (data.files, data.faces) == (["group.jpg", "single.png"], [0, 0])
    assert "skipped wall.png: no face found" in result.output  # type: ignore[attr-defined]
    _, out = craft("--all-faces")
    data = read_features(out)
    assert (data.files, data.faces) == (["group.jpg", "group.jpg", "single.png"], [0, 1, 0])
    _, out = craft("--no-align")
    data = read_features(out)
    assert data.files == ["group.jpg", "single.png", "wall.png"]
    assert json.loads(out.with_suffix(".json").read_text())["config"]["faces"] == {"align": False, "all_faces": False}
