"""ONNX export round trips, parity failures, int8 quantization and the encoder runtime (tiny kit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from typer.testing import CliRunner

from edge_sdk.cli import app
from edge_sdk.fileio import read_features
from edge_sdk.kit import Kit
from edge_sdk.runtime import OnnxEncoder, OnnxModelError, load_encoder
from exporters.onnx_export import EXPORTABLE, ParityError, check_parity, export_component, parity_inputs
from exporters.quantize import quantize_encoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Kit, Path]:
    from conftest import make_tiny_kit

    kit = make_tiny_kit()
    out = tmp_path_factory.mktemp("onnx")
    for component in EXPORTABLE:
        export_component(kit, component, out / f"{component}.onnx")
    return kit, out


@pytest.mark.parametrize("component", EXPORTABLE)
def test_round_trip_passes_checker_and_parity_with_a_dynamic_batch(exported: tuple[Kit, Path], component: str) -> None:
    kit, out = exported
    model = onnx.load(str(out / f"{component}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edge_sdk.component"] == component
    assert json.loads(meta["edge_sdk.kit_manifest"])["feature_shape"] == [4, 4, 4]
    module = kit.components()[component]
    for batch in (1, 5):
        inputs = parity_inputs(kit, component, count=batch)
        abs_diff, _, ok = check_parity(out / f"{component}.onnx", module, inputs)
        assert ok and abs_diff < 1e-4


def test_tampered_weights_break_parity(exported: tuple[Kit, Path], tmp_path: Path) -> None:
    kit, out = exported
    model = onnx.load(str(out / "encoder.onnx"))
    weights = model.graph.initializer[0]
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.5, weights.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    _, _, ok = check_parity(tmp_path / "bad.onnx", kit.encoder, parity_inputs(kit, "encoder"))
    assert not ok


class _ExportDiverges(torch.nn.Module):
    """Behaves differently while being exported: the export cannot match torch."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out * 1.01 if torch.compiler.is_exporting() else out


def test_an_export_that_breaks_parity_fails(tmp_path: Path) -> None:
    from conftest import make_tiny_kit

    kit = make_tiny_kit()
    kit.encoder = _ExportDiverges(kit.encoder)  # type: ignore[assignment]
    with pytest.raises(ParityError, match="differs from torch"):
        export_component(kit, "encoder", tmp_path / "encoder.onnx")
    with pytest.raises(ValueError, match="cannot export"):
        export_component(kit, "critic", tmp_path / "critic.onnx")


def test_onnx_and_torch_encoders_give_the_same_features(exported: tuple[Kit, Path]) -> None:
    kit, out = exported
    images = parity_inputs(kit, "encoder", count=6)
    onnx_features = load_encoder(kit, out / "encoder.onnx").encode(images)
    torch_features = load_encoder(kit).encode(images)
    assert torch.allclose(onnx_features, torch_features, rtol=1e-3, atol=1e-5)


def test_missing_corrupt_and_mismatched_onnx_files(exported: tuple[Kit, Path], tmp_path: Path) -> None:
    kit, out = exported
    with pytest.raises(OnnxModelError, match="no such ONNX file"):
        OnnxEncoder(tmp_path / "absent.onnx", kit)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not a protobuf model")
    with pytest.raises(OnnxModelError, match="not a loadable ONNX model"):
        OnnxEncoder(tmp_path / "junk.onnx", kit)
    with pytest.raises(OnnxModelError):
        OnnxEncoder(out / "head.onnx", kit)  # takes features, not images


def test_int8_encoder_is_smaller_and_close(exported: tuple[Kit, Path], tmp_path: Path) -> None:
    kit, out = exported
    report = quantize_encoder(kit, out / "encoder.onnx", tmp_path / "encoder.int8.onnx")
    assert report.bytes_int8 < report.bytes_fp32
    assert 0 <= report.relative_feature_distance < 0.5
    assert 0 <= report.pose_accuracy_int8 <= 1


def test_cli_export_then_encode_and_craft_with_onnxruntime(tmp_path: Path, tiny_kit_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["export", "onnx", "--kit", str(tiny_kit_dir), "--out", str(tmp_path / "onnx"), "--component", "encoder"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert [m["component"] for m in report["models"]] == ["encoder"] and report["models"][0]["parity_ok"]
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("L", (40, 40), 50 * i + 20).save(faces / f"{i}.png")
    common = ["--kit", str(tiny_kit_dir), "-q"]
    runner.invoke(app, ["encode", str(faces), "--out", str(tmp_path / "t.npz"), *common])
    result = runner.invoke(
        app,
        [
            "encode",
            str(faces),
            "--out",
            str(tmp_path / "o.npz"),
            *common,
            "--encoder-onnx",
            str(tmp_path / "onnx" / "encoder.onnx"),
        ],
    )
    assert result.exit_code == 0, result.output
    onnx_run, torch_run = read_features(tmp_path / "o.npz"), read_features(tmp_path / "t.npz")
    assert onnx_run.config["encoder_backend"] == "onnxruntime"
    assert np.allclose(onnx_run.features, torch_run.features, rtol=1e-3, atol=1e-5)
    result = runner.invoke(
        app,
        [
            "craft",
            str(faces),
            "--out",
            str(tmp_path / "c.npz"),
            *common,
            "--steps",
            "1",
            "--encoder-onnx",
            str(tmp_path / "onnx" / "encoder.onnx"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "encode",
            str(faces),
            "--out",
            str(tmp_path / "x.npz"),
            *common,
            "--encoder-onnx",
            str(tmp_path / "nope.onnx"),
        ],
    )
    assert result.exit_code == 2 and "no such ONNX file" in result.output
