"""Attribution maps of the kit head's answer, checked against gradients computed here by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from edge_sdk.cli import app
from edge_sdk.console import EXIT_BAD_INPUT
from edge_sdk.errors import EdgeSDKError, TensorShapeError
from edge_sdk.explanation_noise import coarsen_maps
from edge_sdk.explanations import (
    IntegratedGradientsMap,
    OnnxInput,
    explain,
    explain_onnx,
    open_onnx_classifier,
    read_onnx_input,
)
from edge_sdk.kit import Kit

pytest.importorskip("captum", reason="Captum is not installed (extra 'explain')")

runner = CliRunner()


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _answers(kit: Kit, images: torch.Tensor) -> torch.Tensor:
    assert kit.head is not None
    with torch.no_grad():
        return kit.head(kit.encoder(images)).argmax(1)


def test_grad_is_the_magnitude_of_the_input_gradient_of_the_answer(tiny_kit: Kit) -> None:
    images = _images()
    result = explain(tiny_kit, images, method="grad")
    assert torch.equal(result.predicted, _answers(tiny_kit, images))
    x = images.clone().requires_grad_(True)
    assert tiny_kit.head is not None
    logits = tiny_kit.head(tiny_kit.encoder(x))
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), result.predicted].sum(), x)
    torch.testing.assert_close(result.maps, gradient.abs().amax(dim=1))


def test_grad_cam_weighs_the_encoder_output_by_its_mean_gradient(tiny_kit: Kit) -> None:
    images = _images()
    result = explain(tiny_kit, images, method="grad-cam")
    assert tiny_kit.head is not None
    features = tiny_kit.encoder(images).detach().requires_grad_(True)
    logits = tiny_kit.head(features)
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(images)), result.predicted].sum(), features)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    expected = F.interpolate(cam, size=(16, 16), mode="bilinear")[:, 0]
    torch.testing.assert_close(result.maps, expected.detach())
    assert result.maps.shape == (5, 16, 16) and bool((result.maps >= 0).all())


def test_integrated_gradients_of_a_linear_classifier_are_input_times_weight() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    images, target, black = torch.randn(4, 2, 4, 4), torch.tensor([0, 2, 1, 2]), -1.0
    maps = IntegratedGradientsMap(black=black, steps=8).attribute(model, images, target)  # type: ignore[arg-type]
    weights = model[1].weight[target].view(4, 2, 4, 4).detach()
    torch.testing.assert_close(maps, ((images - black) * weights).sum(dim=1).abs())


def test_explaining_leaves_the_kit_as_it_was_and_does_not_depend_on_the_batch(tiny_kit: Kit) -> None:
    before = {k: v.clone() for k, v in tiny_kit.encoder.state_dict().items()}
    flags = [p.requires_grad for p in tiny_kit.encoder.parameters()]
    whole = explain(tiny_kit, _images(), method="integrated-gradients")
    pieces = explain(tiny_kit, _images(), method="integrated-gradients", batch_size=2)
    torch.testing.assert_close(whole.maps, pieces.maps)
    assert all(torch.equal(v, tiny_kit.encoder.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in tiny_kit.encoder.parameters()] == flags
    assert all(p.grad is None for p in tiny_kit.encoder.parameters())
    with pytest.raises(ValueError, match="method must be one of"):
        explain(tiny_kit, _images(), method="lime")


def test_explain_command_writes_maps_answers_and_an_overlay_figure(tmp_path: Path, tiny_kit_dir: Path) -> None:
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("L", (20, 20), 30 + 60 * i).save(faces / f"{i}.png")
    (faces / "broken.png").write_bytes(b"nope")
    out, figure = tmp_path / "maps.npz", tmp_path / "maps.png"
    args = ["explain", str(faces), "--out", str(out), "--kit", str(tiny_kit_dir), "--no-align", "-q"]
    result = runner.invoke(app, [*args, "--method", "grad-cam", "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "explained 3 faces" in result.output and "skipped broken.png" in result.output
    with np.load(out, allow_pickle=False) as data:
        assert data["maps"].shape == (3, 16, 16) and list(data["files"]) == ["0.png", "1.png", "2.png"]
        np.testing.assert_allclose(data["probabilities"].sum(1), 1.0, rtol=1e-5)
        assert data["predicted"].tolist() == data["probabilities"].argmax(1).tolist()
    assert Image.open(figure).format == "PNG"
    bad = runner.invoke(app, [*args, "--method", "lime"])
    assert bad.exit_code == EXIT_BAD_INPUT and "grad-cam" in bad.output
    coarse = tmp_path / "coarse.npz"
    result = runner.invoke(app, [*args[:3], str(coarse), *args[4:], "--method", "grad-cam", "--coarsen", "4"])
    assert result.exit_code == 0 and "(grad-cam+coarsen4)" in result.output
    with np.load(out) as fine, np.load(coarse) as coarsened:
        expected = coarsen_maps(torch.from_numpy(fine["maps"]), grid=4).numpy()
        np.testing.assert_allclose(coarsened["maps"], expected, rtol=1e-6)
        assert '"coarsen": 4' in str(coarsened["config"])
    too_fine = runner.invoke(app, [*args, "--coarsen", "17"])
    assert too_fine.exit_code == EXIT_BAD_INPUT and "side, 16" in too_fine.output


def _bilinear_reference(cells: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with pixel centres, written out: source ``(x + 0.5) * g / size - 0.5``, clamped."""
    grid = cells.shape[-1]
    source = np.clip((np.arange(size) + 0.5) * grid / size - 0.5, 0, grid - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, grid - 1)
    weight = source - low
    rows = cells[:, low, :] * (1 - weight)[None, :, None] + cells[:, high, :] * weight[None, :, None]
    return rows[:, :, low] * (1 - weight)[None, None, :] + rows[:, :, high] * weight[None, None, :]


def test_coarsened_maps_are_block_means_bilinearly_upsampled() -> None:
    maps = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    blocks = maps.numpy().reshape(3, 8, 8, 8, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(coarsen_maps(maps, grid=8).numpy(), _bilinear_reference(blocks, 64), atol=1e-6)
    flat = torch.full((1, 64, 64), 0.3)
    torch.testing.assert_close(coarsen_maps(flat, grid=5), flat)  # uneven cells too
    with pytest.raises(ValueError, match="grid must be between 1"):
        coarsen_maps(maps, grid=65)


def _onnx(module: nn.Module, *, dynamic: bool, example: tuple[int, ...] = (1, 1, 16, 16)) -> bytes:
    import io
    import warnings

    buffer = io.BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.rand(*example),), buffer, input_names=["x"], output_names=["y"],
            dynamic_axes=axes, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


def test_occlusion_of_an_onnx_classifier_is_the_drop_of_its_answer_per_window() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 3)
    module = nn.Sequential(nn.Flatten(), linear)
    images = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    result = explain_onnx(_onnx(module, dynamic=True), images, window=4)
    with torch.no_grad():
        logits = module(images)
    assert result.method == "occlusion" and torch.equal(result.predicted, logits.argmax(1))
    torch.testing.assert_close(result.probabilities, logits.softmax(1), rtol=1e-5, atol=1e-6)
    # A linear classifier's logit drops by sum(w * x) over the occluded square, for every pixel in it.
    weight = linear.weight.detach().numpy().reshape(3, 16, 16)
    expected = np.zeros((5, 16, 16), np.float32)
    for n, c in enumerate(result.predicted.tolist()):
        contribution = weight[c] * images[n, 0].numpy()
        for top in range(0, 16, 4):
            for left in range(0, 16, 4):
                expected[n, top : top + 4, left : left + 4] = abs(contribution[top : top + 4, left : left + 4].sum())
    np.testing.assert_allclose(result.maps.numpy(), expected, rtol=1e-4, atol=1e-5)
    # A graph with the batch baked in, returning probabilities, gives the same maps of the same answers.
    fixed = explain_onnx(_onnx(nn.Sequential(module, nn.Softmax(1)), dynamic=False), images, window=4)
    assert torch.equal(fixed.predicted, result.predicted)
    torch.testing.assert_close(fixed.probabilities, result.probabilities, rtol=1e-5, atol=1e-6)
    assert fixed.maps.shape == (5, 16, 16) and bool((fixed.maps > 0).any())
    with pytest.raises(ValueError, match="window"):
        explain_onnx(_onnx(module, dynamic=True), images, window=17)


class _ChannelsLast(nn.Module):
    """A Keras-style classifier: takes ``(B, H, W, C)`` and applies ``inner`` to the channels-first view."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2))


def test_a_channels_last_classifier_gets_the_maps_of_its_channels_first_twin() -> None:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
    first, last = (
        _onnx(inner, dynamic=True, example=(1, 3, 16, 16)),
        _onnx(_ChannelsLast(inner), dynamic=False, example=(2, 16, 16, 3)),
    )
    assert read_onnx_input(first) == OnnxInput(channels=3, height=16, width=16, channels_last=False, batch=None)
    assert read_onnx_input(last) == OnnxInput(channels=3, height=16, width=16, channels_last=True, batch=2)
    assert read_onnx_input(last).side == 16
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    expected = explain_onnx(first, images, window=4)
    # Five images through a graph fixed at batch 2: the last one is padded, not refused.
    for graph in (last, open_onnx_classifier(last)):  # a file's bytes, or a session loaded once
        got = explain_onnx(graph, images, window=4, batch_size=5)
        assert torch.equal(got.predicted, expected.predicted)
        torch.testing.assert_close(got.maps, expected.maps, rtol=1e-4, atol=1e-5)
    with pytest.raises(TensorShapeError, match=r"\(C, H, W\) = \(3, 16, 16\)"):
        explain_onnx(last, images[:, :1], window=4)
    with pytest.raises(EdgeSDKError, match="cannot load"):
        read_onnx_input(b"not onnx")
    with pytest.raises(EdgeSDKError, match="one image input"):
        read_onnx_input(_onnx(nn.Linear(16, 3), dynamic=True, example=(1, 16)))
    # A wide input is explained too: the layout is read dimension by dimension.
    wide = _onnx(nn.Sequential(nn.Flatten(), nn.Linear(12 * 20, 2)), dynamic=True, example=(1, 1, 12, 20))
    assert read_onnx_input(wide) == OnnxInput(channels=1, height=12, width=20, channels_last=False, batch=None)
    assert explain_onnx(wide, torch.rand(2, 1, 12, 20), window=4).maps.shape == (2, 12, 20)
    with pytest.raises(TensorShapeError, match=r"= \(1, 12, 20\)"):
        explain_onnx(wide, torch.rand(2, 1, 20, 12), window=4)


def _unboxed(output: str) -> str:
    """Click's error text without the box Rich draws around it and the line breaks it adds."""
    return " ".join(output.replace("│", " ").split())


def test_explain_command_explains_an_onnx_classifier_on_its_own_input(tmp_path: Path, tiny_kit_dir: Path) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(3 * 12 * 12, 4, bias=False)  # its answer does not change with the pixel scale
    model = tmp_path / "classifier.onnx"
    model.write_bytes(_onnx(_ChannelsLast(nn.Sequential(nn.Flatten(), linear)), dynamic=True, example=(1, 12, 12, 3)))
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("RGB", (30, 30), (40 * i, 90, 200 - 50 * i)).save(faces / f"{i}.png")
    out, figure = tmp_path / "maps.npz", tmp_path / "maps.png"
    args = ["explain", str(faces), "--out", str(out), "--kit", str(tiny_kit_dir), "--no-align", "-q"]
    result = runner.invoke(app, [*args, "--onnx", str(model), "--window", "3", "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "explained 3 faces (occlusion)" in result.output and Image.open(figure).format == "PNG"
    with np.load(out, allow_pickle=False) as data:
        maps, predicted = data["maps"], data["predicted"]
        assert '"method": "occlusion"' in str(data["config"])
    # Each flat-coloured picture becomes a flat 12 x 12 RGB input in [0, 1]; a linear model's
    # occlusion map is then |sum of w * x| over each 3 x 3 square, known in closed form.
    colours = torch.tensor([[40.0 * i, 90.0, 200.0 - 50 * i] for i in range(3)]) / 255
    images = colours[:, :, None, None].expand(3, 3, 12, 12)
    with torch.no_grad():
        answers = linear(images.flatten(1)).argmax(1)
    assert predicted.tolist() == answers.tolist()
    weight = linear.weight.detach().view(4, 3, 12, 12)
    contribution = (weight[answers] * images).sum(1).numpy()
    blocks = np.abs(contribution.reshape(3, 4, 3, 4, 3).sum(axis=(2, 4)))
    np.testing.assert_allclose(maps, np.repeat(np.repeat(blocks, 3, axis=1), 3, axis=2), rtol=1e-4, atol=1e-5)
    bytes_range = runner.invoke(app, [*args, "--onnx", str(model), "--window", "3", "--pixel-scale", "255"])
    assert bytes_range.exit_code == 0, bytes_range.output
    with np.load(out, allow_pickle=False) as data:
        np.testing.assert_allclose(data["maps"], maps * 255, rtol=1e-3)
    wrong_method = runner.invoke(app, [*args, "--onnx", str(model), "--method", "grad"])
    assert wrong_method.exit_code == EXIT_BAD_INPUT and "occlusion only" in _unboxed(wrong_method.output)
    upload = runner.invoke(
        app, [*args, "--onnx", str(model), "--upload", "http://x", "--dataset", "d", "--api-key", "k"]
    )
    assert upload.exit_code == EXIT_BAD_INPUT and "not of --onnx" in _unboxed(upload.output)
    assert runner.invoke(app, [*args, "--method", "occlusion"]).exit_code == EXIT_BAD_INPUT
    without = runner.invoke(app, [*args, "--pixel-scale", "255"])
    assert without.exit_code == EXIT_BAD_INPUT and "--onnx" in _unboxed(without.output)
    tiny = tmp_path / "tiny.onnx"
    tiny.write_bytes(_onnx(nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), dynamic=True, example=(1, 1, 6, 6)))
    too_small = runner.invoke(app, [*args, "--onnx", str(tiny), "--window", "2"])
    assert too_small.exit_code == EXIT_BAD_INPUT and "cannot become its input" in _unboxed(too_small.output)
