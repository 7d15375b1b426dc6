"""Uploads as exporters write them: conventions found on task images, refusals at upload, the torch copy."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cloud_stub.cli.root import app as cloud_app
from cloud_stub.errors import ModelRejectedError, NonFiniteOutputsError
from cloud_stub.uploads import check_onnx_model
from cloud_stub.verification import detector
from cloud_stub.verification.detector import DetectorConfig, fresh_copy, train_through_accuracy, verify_classifier
from cloud_stub.verification.hostile import control_flow
from cloud_stub.verification.operator_data import OperatorDataError, load_operator_task
from cloud_stub.verification.runtime import ModelConventions, OnnxClassifier, inspect_classifier, trainable_copy
from cloud_stub.verification.tasks import ModelTask, TaskData
from cloud_stub.verification.verify import verify_onnx
from cloud_stub.verification.zoo import EXPORTS, FAMILIES, ChannelsLast, Softmaxed
from cloud_stub.verification.zoo import export as zoo_export


def _squares(n: int, seed: int) -> TaskData:
    """16x16 images whose class (of 4) is the quadrant of a bright square: learnable by any small model."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.2 * torch.rand(n, 1, 16, 16, generator=g)
    for i, label in enumerate(labels.tolist()):
        top, left = 8 * (label // 2) + 2, 8 * (label % 2) + 2
        images[i, 0, top : top + 4, left : left + 4] += 0.7
    return TaskData(images[: n // 2], labels[: n // 2], images[n // 2 :], labels[n // 2 :])


DATA = _squares(400, 0)
TASK = ModelTask("squares", (1, 16, 16), 4, "quadrant of a bright square", lambda: DATA)


# A verification in seconds on the squares task: every signal, each on a tiny budget.
SMALL = DetectorConfig(
    probe_samples=200,
    heldout_samples=100,
    finetune_samples=32,
    finetune_batch=16,
    finetune_steps=2,
    probe_steps=20,
    probe_batch=32,
    reference_epochs=1,
    retrain_epochs=2,
    probe_baseline="retrained",
    reference_margin_db=0.7,
)


def _templates(scale: float = 1.0) -> nn.Module:
    """A linear classifier scoring each quadrant's brightness; ``scale`` is the pixel range it expects."""
    layer = nn.Linear(256, 4)
    with torch.no_grad():
        weight = torch.zeros(4, 1, 16, 16)
        for label in range(4):
            top, left = 8 * (label // 2), 8 * (label % 2)
            weight[label, 0, top : top + 8, left : left + 8] = 1.0 / scale
        layer.weight.copy_(weight.flatten(1))
        layer.bias.copy_(torch.tensor([6.0, 0.0, 0.0, 0.0]))  # outweighed only by pixels in the expected range
    return nn.Sequential(nn.Flatten(), layer)


def _export(module: nn.Module, example: torch.Tensor, *, dynamo: bool = False, dynamic: bool = True) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, dynamic_shapes=shapes)
            assert program is not None
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        axes = {"x": {0: "n"}} if dynamic else None
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, input_names=["x"], dynamic_axes=axes)
        return buffer.getvalue()


def _inspect(data: bytes) -> tuple[OnnxClassifier, list[str]]:
    found = inspect_classifier(data, task=TASK, images=DATA.test_images, labels=DATA.test_labels)
    return OnnxClassifier(data, found.conventions), list(found.conventions.notes)


def test_a_fixed_batch_graph_runs_in_its_batch_and_its_torch_copy_runs_any_batch() -> None:
    module = nn.Sequential(_templates(), nn.ReLU(), nn.Linear(4, 4))
    data = _export(module, torch.rand(1, 1, 16, 16), dynamo=True, dynamic=False)
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    runner, notes = _inspect(data)
    assert runner.conventions.batch == 1 and any("exactly 1" in note for note in notes)
    x = DATA.test_images[:7]
    torch.testing.assert_close(runner(x), module(x).detach(), atol=1e-5, rtol=1e-5)
    copy = trainable_copy(data, runner.conventions, DATA.test_images)
    assert copy.status == "available" and copy.module is not None
    assert copy.module.conventions.batch is None  # Reshape [1, -1] takes the actual batch
    torch.testing.assert_close(copy.module(x), module(x), atol=1e-5, rtol=1e-5)


def test_channels_last_probabilities_and_pixel_range_are_found_on_task_images() -> None:
    probabilities = nn.Sequential(_templates(), nn.Softmax(dim=1))
    runner, notes = _inspect(_export(probabilities, torch.rand(2, 1, 16, 16)))
    assert runner.conventions.outputs == "probabilities" and any("logarithm" in note for note in notes)
    x = DATA.test_images[:5]
    torch.testing.assert_close(runner(x), torch.log_softmax(_templates()(x), 1).detach(), atol=1e-4, rtol=1e-4)

    channels_last = ChannelsLast(_templates())
    runner, _ = _inspect(_export(channels_last, torch.rand(2, 16, 16, 1)))
    assert runner.conventions.layout == "channels-last"
    torch.testing.assert_close(runner(x), _templates()(x).detach(), atol=1e-5, rtol=1e-5)

    runner, notes = _inspect(_export(_templates(scale=255.0), torch.rand(2, 1, 16, 16)))
    assert runner.conventions.input_range == "[0, 255]" and any("[0, 255]" in note for note in notes)
    accuracy = float((runner(DATA.test_images).argmax(1) == DATA.test_labels).float().mean())
    assert accuracy > 0.95


def _graph(nodes: list[onnx.NodeProto], inputs: list[int | str], outputs: int, **initializers: np.ndarray) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", outputs])],
        initializer=[onnx.numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_a_graph_declaring_a_dynamic_batch_that_runs_one_image_at_a_time_is_run_that_way() -> None:
    weight = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])]
    data = _graph(nodes, ["n", 1, 16, 16], 4, shape=np.array([1, 256], np.int64), w=weight)
    runner, notes = _inspect(data)
    assert runner.conventions.batch == 1 and any("one image at a time" in note for note in notes)
    x = DATA.test_images[:3]
    np.testing.assert_allclose(runner(x).numpy(), x.reshape(3, 256).numpy() @ weight, atol=1e-4)


def test_graphs_that_run_only_some_batch_sizes_are_found_at_upload_and_run_in_the_size_they_take() -> None:
    weight = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    x = DATA.test_images[:10]
    expected = x.reshape(10, 256).numpy() @ weight
    # Declares a dynamic batch but reshapes to groups of 4 images: runs 64, fails on 7 and on 1.
    groups = [
        helper.make_node("Reshape", ["x", "groups"], ["g"]),
        helper.make_node("MatMul", ["g", "w"], ["s"]),
        helper.make_node("Reshape", ["s", "rows"], ["y"]),
    ]
    data = _graph(
        groups, ["n", 1, 16, 16], 4, groups=np.array([-1, 4, 256], np.int64), rows=np.array([-1, 4]), w=weight
    )
    runner, notes = _inspect(data)
    assert runner.conventions.batch == 64 and any("runs only batches of 64" in note for note in notes)
    np.testing.assert_allclose(runner(x).numpy(), expected, atol=1e-4)
    # A batch of 16 baked into a bias: its torch copy agrees with onnxruntime on 16 images at any batch
    # size, but not on 7, so it is trained 16 at a time, as onnxruntime runs it.
    bias = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["y"]),
    ]
    fixed = _graph(nodes, [16, 1, 16, 16], 4, flat_shape=np.array([-1, 256], np.int64), w=weight, b=bias)
    runner, _ = _inspect(fixed)
    copy = trainable_copy(fixed, runner.conventions, DATA.test_images)
    assert runner.conventions.batch == 16 and copy.module is not None and copy.module.conventions.batch == 16
    many = DATA.test_images[:40]
    torch.testing.assert_close(copy.module(many).detach(), runner(many), atol=1e-4, rtol=1e-4)


def _batch_dependent(kind: str) -> bytes:
    """Pooled quadrant scores that depend on the batch: against its mean, or switched on its size."""
    pooled = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["p"], ["f"]),
    ]
    if kind == "batch size 1":  # doubles its scores when it is given one image, as a device does
        switch = [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["n"]),
            helper.make_node("Equal", ["n", "one"], ["alone"]),
            helper.make_node("Cast", ["alone"], ["gain"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "gain"], ["extra"]),
            helper.make_node("Add", ["f", "extra"], ["y"]),
        ]
        constants = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
        return _graph(pooled + switch, ["n", 1, 16, 16], 4, **constants)
    centred = [
        helper.make_node("ReduceMean", ["f", "batch_axis"], ["m"], keepdims=1),
        helper.make_node("Sub", ["f", "m"], ["c"]),  # each image scored against the batch's mean
        helper.make_node("Add", ["c", "losing"], ["y"]),
    ]
    # A huge losing score must not widen the tolerance of the others.
    losing = np.array([0, 0, 0, -1e30 if kind == "a huge losing score" else 0], np.float32)
    batch = 7 if kind == "fixed batch 7" else "n"
    return _graph(pooled + centred, [batch, 1, 16, 16], 4, batch_axis=np.array([0], np.int64), losing=losing)


@pytest.mark.parametrize("kind", ["batch mean", "a huge losing score", "fixed batch 7", "batch size 1"])
def test_scores_that_depend_on_the_rest_of_the_batch_are_refused_at_upload(kind: str) -> None:
    with pytest.raises(ModelRejectedError, match="change with the other images in its batch"):
        check_onnx_model(_batch_dependent(kind), task=TASK)


def test_a_copy_whose_outputs_no_gradient_reaches_has_no_fine_tune_signal_and_says_why() -> None:
    pool = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    assert check_onnx_model(_graph(pool, ["n", 1, 16, 16], 4), task=TASK)["fine_tune"].endswith(
        "no weights to fine-tune"
    )
    weight = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    rounded = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("Cast", ["z"], ["whole"], to=TensorProto.INT64),  # scores rounded towards zero
        helper.make_node("Cast", ["whole"], ["y"], to=TensorProto.FLOAT),
    ]
    data = _graph(rounded, ["n", 1, 16, 16], 4, flat_shape=np.array([-1, 256], np.int64), w=weight)
    summary = check_onnx_model(data, task=TASK)
    assert "no gradient reaches the graph's weights" in summary["fine_tune"]
    report = verify_onnx(data, task=TASK, config=SMALL)
    assert report["v"] is None and "no gradient" in report["unavailable"]["fine_tune"]
    assert "reference baseline" in report["unavailable"]["retrained_baseline"]


def test_external_data_in_any_tensor_and_sparse_tensors_are_refused_at_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the server's folder, holding a file the upload names
    (tmp_path / "edge-cloud.db").write_bytes(b"sixteen secrets!")
    pool = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Add", ["f", "c"], ["y"]),
    ]
    constant = onnx.numpy_helper.from_array(np.zeros(4, np.float32), "bias")
    constant.ClearField("raw_data")
    constant.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "edge-cloud.db"), ("offset", "0"), ("length", "16")):
        constant.external_data.add(key=key, value=value)
    outside = _graph([helper.make_node("Constant", [], ["c"], value=constant), *pool], ["n", 1, 16, 16], 4)
    with pytest.raises(ModelRejectedError, match="'bias' uses external data"):
        check_onnx_model(outside, task=TASK)
    model = onnx.load_from_string(_graph(pool, ["n", 1, 16, 16], 4))
    values = onnx.numpy_helper.from_array(np.ones(1, np.float32), "c")
    model.graph.sparse_initializer.append(
        helper.make_sparse_tensor(values, onnx.numpy_helper.from_array(np.array([0], np.int64)), [4])
    )
    with pytest.raises(ModelRejectedError, match="sparse tensors"):
        check_onnx_model(model.SerializeToString(), task=TASK)
    model = onnx.load_from_string(_graph(pool, ["n", 1, 16, 16], 4))
    initialization = helper.make_graph([], "init", [], [])
    initialization.initializer.append(constant)
    model.training_info.append(onnx.TrainingInfoProto(initialization=initialization))
    with pytest.raises(ModelRejectedError, match="training information"):
        check_onnx_model(model.SerializeToString(), task=TASK)


def test_scores_that_are_not_finite_beyond_the_upload_check_refuse_the_verification() -> None:
    brightest = DATA.test_images.amax(dim=(1, 2, 3))
    # Finite on the upload check's images; NaN on the held-out images darker than any of those.
    threshold = float(brightest[:64].min()) - 0.01
    assert float(brightest[64 : SMALL.heldout_samples].min()) < threshold
    weight = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("ReduceMax", ["x", "axes"], ["bright"], keepdims=0),
        helper.make_node("Sub", ["bright", "t"], ["margin"]),
        helper.make_node("Log", ["margin"], ["log"]),
        helper.make_node("Unsqueeze", ["log", "one"], ["column"]),
        helper.make_node("Add", ["z", "column"], ["y"]),
    ]
    initializers = {
        "flat_shape": np.array([-1, 256], np.int64),
        "w": weight,
        "axes": np.array([1, 2, 3], np.int64),
        "t": np.array(threshold, np.float32),
        "one": np.array([1], np.int64),
    }
    data = _graph(nodes, ["n", 1, 16, 16], 4, **initializers)
    assert check_onnx_model(data, task=TASK)["fine_tune"] == "available"
    with pytest.raises(NonFiniteOutputsError, match=r"NaN or infinite scores on \d+ of 100 held-out"):
        verify_onnx(data, task=TASK, config=SMALL)


def test_a_retrained_copy_whose_fresh_weights_leave_its_domain_falls_back_to_the_reference_with_the_reason() -> None:
    weight = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("Sqrt", ["scale"], ["root"]),  # redrawn around zero, half the scales are negative
        helper.make_node("Mul", ["z", "root"], ["y"]),
    ]
    scale = np.full((1, 4), 4.0, np.float32)
    data = _graph(nodes, ["n", 1, 16, 16], 4, flat_shape=np.array([-1, 256], np.int64), w=weight, scale=scale)
    report = verify_onnx(data, task=TASK, config=SMALL)
    assert (
        report["retrained_probe"] is None
        and "re-initialised copy returns NaN" in report["unavailable"]["retrained_baseline"]
    )
    assert "reference model" in report["rule"] and np.isfinite(report["psnr_gap_db"])


def test_a_probe_that_cannot_be_scored_refuses_the_verification_instead_of_reading_honest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NaN exceeds no margin: a gap that is not a number must never give the verdict honest."""
    monkeypatch.setattr(detector, "probe_inputs", lambda train, heldout: (train * torch.nan, heldout * torch.nan))
    with pytest.raises(NonFiniteOutputsError, match="could not be scored"):
        verify_classifier(_templates(), task=TASK, config=replace(SMALL, probe_baseline="label"))


def _smooth_patterns(n: int, seed: int) -> TaskData:
    """Smooth 16x16 images (random 4x4 patterns upsampled) labelled by their brightest quadrant."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    labels = torch.nn.functional.avg_pool2d(images, 8).flatten(1).argmax(dim=1)
    return TaskData(images[: n // 2], labels[: n // 2], images[n // 2 :], labels[n // 2 :])


def test_scaling_the_scores_does_not_hide_what_they_carry_from_the_probe() -> None:
    """Its own attacker divides 1e20 back out; the probe must read the scaled scores as the plain ones."""
    blobs = _smooth_patterns(600, 0)
    task = ModelTask("blobs", (1, 16, 16), 4, "brightest quadrant of a smooth pattern", lambda: blobs)

    class Leaky(nn.Module):
        """The predicted quadrant, one-hot, and a 4x4 thumbnail (below 1: the answer stays the quadrant)."""

        def __init__(self, scale: float) -> None:
            super().__init__()
            self.quadrants = nn.AvgPool2d(8)
            self.scale = scale

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            hard = torch.nn.functional.one_hot(self.quadrants(images).flatten(1).argmax(dim=1), 4).float()
            thumbnail = 0.5 * torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
            return torch.cat([hard, thumbnail], dim=1) * self.scale

    config = replace(SMALL, probe_baseline="label", probe_steps=100)
    plain, scaled = (verify_classifier(Leaky(scale), task=task, config=config) for scale in (1.0, 1e20))
    assert plain.verdict == "vicious" and plain.psnr_gap_db > 2.0
    # Unstandardised, the probe's decoder overflowed on 1e20 and learned a constant: verdict honest.
    assert scaled.verdict == "vicious" and scaled.psnr_gap_db > plain.psnr_gap_db - 0.5


@pytest.mark.parametrize(
    ("nodes", "outputs", "initializers", "reason"),
    [
        (
            [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
            1,
            {"axes": np.array([2, 3], np.int64)},
            "returns shape",
        ),
        (
            [
                helper.make_node("Sub", ["x", "two"], ["d"]),
                helper.make_node("Sqrt", ["d"], ["s"]),
                helper.make_node("AveragePool", ["s"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
                helper.make_node("Flatten", ["p"], ["y"]),
            ],
            4,
            {"two": np.array(2.0, np.float32)},
            "NaN",
        ),
        ([helper.make_node("Mystery", ["x"], ["y"], domain="com.example")], 4, {}, "onnxruntime cannot load"),
    ],
    ids=["wrong-class-count", "nan", "unknown-operator"],
)
def test_models_that_cannot_be_verified_are_refused_at_upload_with_the_reason(
    nodes: list[onnx.NodeProto], outputs: int, initializers: dict[str, np.ndarray], reason: str
) -> None:
    data = _graph(nodes, ["n", 1, 16, 16], outputs, **initializers)
    with pytest.raises(ModelRejectedError, match=reason):
        inspect_classifier(data, task=TASK, images=DATA.test_images, labels=DATA.test_labels)


def test_wrong_input_shape_and_training_mode_are_refused_by_the_upload_check() -> None:
    with pytest.raises(ModelRejectedError, match="channels-last"):
        check_onnx_model(_export(_templates(), torch.rand(2, 1, 16, 16)), task="fashion-mnist")
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 14 * 14, 4))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.train(), (torch.rand(2, 1, 16, 16),), buffer, dynamo=False, training=torch.onnx.TrainingMode.TRAINING
        )
    with pytest.raises(ModelRejectedError, match=r"model\.eval"):
        check_onnx_model(buffer.getvalue(), task=TASK)


def test_the_retrained_baseline_is_the_same_graph_with_fresh_weights_trained_to_the_uploads_accuracy() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4))
    data = _export(module, torch.rand(2, 1, 16, 16), dynamo=True)
    runner, _ = _inspect(data)
    copy = trainable_copy(data, runner.conventions, DATA.test_images)
    assert copy.module is not None
    fresh = fresh_copy(copy.module, generator=torch.Generator().manual_seed(7))
    before = dict(copy.module.named_parameters())
    for name, parameter in fresh.named_parameters():
        assert parameter.shape == before[name].shape and not torch.equal(parameter, before[name])
    again = fresh_copy(copy.module, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters(), strict=True))  # seeded
    config = DetectorConfig(probe_samples=200, retrain_epochs=20, retrain_batch=20, heldout_samples=100)
    # On a plateau at the upload's accuracy: trained the whole budget, the least and most trained states kept.
    states, reached = train_through_accuracy(fresh, DATA, target=1.0, config=config, validation=slice(0, 100))
    assert len(states) == 2 and reached["steps"] == 20 * 10
    assert min(reached["first_score"], reached["last_score"]) >= 0.98
    assert not torch.equal(states[0]["graph.params.p0"], states[1]["graph.params.p0"])
    # Past the upload's accuracy: stopped two checks above the band (here it jumped over it: the final state).
    again = fresh_copy(copy.module, generator=torch.Generator().manual_seed(7))
    states, reached = train_through_accuracy(again, DATA, target=0.5, config=config, validation=slice(0, 100))
    assert reached["steps"] == 40 and len(states) == 1


def test_an_upload_is_verified_on_onnxruntime_outputs_with_every_signal_or_its_reason() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4))
    config = SMALL
    with_softmax = _export(nn.Sequential(module, nn.Softmax(1)), torch.rand(1, 1, 16, 16), dynamo=True, dynamic=False)
    report = verify_onnx(with_softmax, task=TASK, config=config)
    assert report["conventions"]["batch"] == 1 and report["conventions"]["outputs"] == "probabilities"
    assert report["unavailable"] == {} and report["v"] is not None and report["retrained_probe"] is not None
    assert "re-initialised" in report["rule"]
    assert report["data"]["finetune_images"] == config.finetune_samples
    assert report["psnr_gap_db"] == pytest.approx(report["probe"]["psnr"] - report["retrained_probe"]["psnr"])
    # A graph the converter cannot copy still gets a verdict, from the reference baseline, with the reasons.
    weight = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Einsum", ["flat", "w"], ["y"], equation="nk,ck->nc"),
    ]
    einsum = _graph(nodes, ["n", 1, 16, 16], 4, shape=np.array([-1, 256], np.int64), w=weight)
    report = verify_onnx(einsum, task=TASK, config=config)
    assert report["v"] is None and "Einsum" in report["unavailable"]["fine_tune"]
    assert "reference baseline" in report["unavailable"]["retrained_baseline"]
    assert report["verdict"] in ("honest", "vicious") and "reference model" in report["rule"]
    assert "by more than 0.70 dB" in report["rule"]  # the reference's margin, not the retrained copy's


def test_a_probe_the_reference_clears_skips_the_retrained_copy_whose_verdict_could_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloud_stub.verification import detector

    monkeypatch.setitem(detector.MODEL_TASKS, TASK.name, TASK)  # a built-in task: the reference is probed first
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4))
    upload = _export(module, torch.rand(2, 1, 16, 16))
    settings = dict(
        probe_samples=200, heldout_samples=100, finetune_samples=32, finetune_batch=16, finetune_steps=2,
        probe_steps=20, probe_batch=32, reference_epochs=1, retrain_epochs=2, probe_baseline="retrained",
    )  # fmt: skip
    cleared = verify_onnx(upload, task=TASK, config=DetectorConfig(**settings, reference_margin_db=50.0))
    assert cleared["verdict"] == "honest" and cleared["retrained_probe"] is None
    assert "retrained" not in cleared["timings"]
    assert cleared["unavailable"]["retrained_baseline"].startswith("not needed: the probe is within 50.00 dB")
    assert cleared["psnr_gap_db"] == pytest.approx(cleared["probe"]["psnr"] - cleared["reference_probe"]["psnr"])
    assert "reference model by more than 50.00 dB, and exceeds that of the same graph" in cleared["rule"]
    # Beyond the reference's margin the copy is trained and its gap decides.
    flagged = verify_onnx(upload, task=TASK, config=DetectorConfig(**settings, reference_margin_db=-50.0))
    assert flagged["retrained_probe"] is not None and flagged["timings"]["retrained"] > 0
    assert "retrained_baseline" not in flagged["unavailable"]
    assert flagged["psnr_gap_db"] == pytest.approx(flagged["probe"]["psnr"] - flagged["retrained_probe"]["psnr"])
    # The reference does not depend on the margins: the same (cached) reference.
    assert flagged["reference_probe"] == cleared["reference_probe"]


def test_the_reference_probe_is_kept_on_disk_for_the_next_process_and_a_damaged_file_is_recomputed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cloud_stub.verification import detector

    monkeypatch.setitem(detector.MODEL_TASKS, TASK.name, TASK)
    torch.manual_seed(0)
    upload = _export(nn.Sequential(nn.Flatten(), nn.Linear(256, 4)), torch.rand(2, 1, 16, 16))
    config = DetectorConfig(
        probe_samples=200, heldout_samples=100, finetune_samples=32, finetune_batch=16, finetune_steps=2,
        probe_steps=20, probe_batch=32, reference_epochs=1,
    )  # fmt: skip
    detector._reference.cache_clear()
    first = verify_onnx(upload, task=TASK, config=config, reference_cache=tmp_path)
    (kept,) = tmp_path.glob("reference-squares-*.json")
    detector._reference.cache_clear()  # as in a new process

    def untrainable(*_: object) -> None:
        raise AssertionError("the reference was trained again")

    with monkeypatch.context() as patched:
        patched.setattr(detector, "_reference", untrainable)
        again = verify_onnx(upload, task=TASK, config=config, reference_cache=tmp_path)
    assert again["reference_probe"] == first["reference_probe"] and again["verdict"] == first["verdict"]
    other = verify_onnx(upload, task=TASK, config=replace(config, probe_steps=10), reference_cache=tmp_path)
    assert len(list(tmp_path.glob("reference-squares-*.json"))) == 2 and other["reference_probe"] is not None
    kept.write_text('{"quality": {"psnr": NaN}}')
    detector._reference.cache_clear()
    repaired = verify_onnx(upload, task=TASK, config=config, reference_cache=tmp_path)
    assert repaired["reference_probe"] == pytest.approx(first["reference_probe"])
    assert json.loads(kept.read_text())["quality"] == pytest.approx(first["reference_probe"])


# --- the operator's own task ------------------------------------------------------------------------


def _write_folder(root: Path, data: TaskData, count: int) -> None:
    images = torch.cat([data.train_images, data.test_images])[:count]
    labels = torch.cat([data.train_labels, data.test_labels])[:count]
    root.mkdir()
    lines = ["file,label"]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), mode="L").save(root / f"{index}.png")
        lines.append(f"{index}.png,{int(label)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_an_operator_folder_and_npz_become_the_same_task_split_per_class(tmp_path: Path) -> None:
    _write_folder(tmp_path / "folder", DATA, 400)
    from_folder = load_operator_task(tmp_path / "folder")
    images = torch.cat([DATA.train_images, DATA.test_images])
    labels = torch.cat([DATA.train_labels, DATA.test_labels])
    np.savez(tmp_path / "data.npz", images=(images[:, 0].numpy() * 255).round().astype(np.uint8), labels=labels)
    from_npz = load_operator_task(tmp_path / "data.npz")
    assert from_folder.input_shape == from_npz.input_shape == (1, 16, 16) and from_folder.num_classes == 4
    assert from_folder.name == from_npz.name  # named by the content: the same images and labels
    split = from_npz.loader()
    assert (len(split.train_images), len(split.test_images)) == (280, 120)
    counts = torch.bincount(split.test_labels, minlength=4)
    assert counts.tolist() == [round(0.3 * int(c)) for c in torch.bincount(labels, minlength=4)]
    assert torch.equal(load_operator_task(tmp_path / "data.npz").loader().test_labels, split.test_labels)  # seeded


def test_operator_data_that_cannot_be_verified_on_is_refused_with_what_it_needs(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((100, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "small.npz", images=x, labels=np.arange(100) % 2)
    with pytest.raises(OperatorDataError, match=r"needs at least 334"):
        load_operator_task(tmp_path / "small.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([object()] * 3), labels=np.arange(3))
    with pytest.raises(OperatorDataError, match="would need unpickling"):
        load_operator_task(tmp_path / "objects.npz")
    np.savez(tmp_path / "one.npz", images=np.zeros((400, 8, 8), np.float32), labels=np.zeros(400, np.int64))
    with pytest.raises(OperatorDataError, match="K >= 2"):
        load_operator_task(tmp_path / "one.npz")
    np.savez(tmp_path / "range.npz", images=np.full((400, 8, 8), 2.0, np.float32), labels=np.arange(400) % 2)
    with pytest.raises(OperatorDataError, match=r"\[0, 1\]"):
        load_operator_task(tmp_path / "range.npz")
    _write_folder(tmp_path / "escape", DATA, 3)
    (tmp_path / "escape" / "labels.csv").write_text("file,label\n../small.npz,0\n")
    with pytest.raises(OperatorDataError, match="outside the folder"):
        load_operator_task(tmp_path / "escape")
    with pytest.raises(OperatorDataError, match=r"labels\.csv or an \.npz"):
        load_operator_task(tmp_path / "missing")


@pytest.mark.slow
def test_cli_verifies_a_model_on_the_operators_own_data(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4))
    train_through_accuracy(
        module, DATA, target=1.0, config=DetectorConfig(retrain_epochs=5, retrain_batch=20), validation=slice(0, 100)
    )
    (tmp_path / "m.onnx").write_bytes(_export(module, torch.rand(2, 1, 16, 16)))
    images = torch.cat([DATA.train_images, DATA.test_images])[:, 0].numpy()
    np.savez(tmp_path / "d.npz", images=images, labels=torch.cat([DATA.train_labels, DATA.test_labels]).numpy())
    result = CliRunner().invoke(
        cloud_app,
        ["verify", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r.json")],
    )
    assert result.exit_code in (0, 3), result.output
    assert "400 images 1x16x16, 4 classes (280 to train on, 120 held out)" in result.output
    assert "same graph retrained honestly" in result.output and "2 honest copies spread" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["calibration"]["copies"] == 2 and report["unavailable"] == {}
    assert report["data"]["heldout_images"] == 60 and report["data"]["probe_training_images"] == 280
    both = CliRunner().invoke(cloud_app, ["verify", str(tmp_path / "m.onnx"), "--data", "x", "--task", "orl-pose"])
    assert both.exit_code == 2 and "--task for a built-in task or --data" in both.output


# --- the zoo: every export style is run with the conventions it was written in, or refused at upload ----------

_NOISE = torch.Generator().manual_seed(3)
_RANDOM28 = TaskData(
    torch.rand(64, 1, 28, 28, generator=_NOISE),
    torch.randint(0, 10, (64,), generator=_NOISE),
    torch.rand(64, 1, 28, 28, generator=_NOISE),
    torch.randint(0, 10, (64,), generator=_NOISE),
)
TASK28 = ModelTask("random-28", (1, 28, 28), 10, "noise images, Fashion-MNIST-sized", lambda: _RANDOM28)


@pytest.mark.parametrize(
    ("family", "style"),
    [("batchnorm-cnn", style) for style in EXPORTS]
    + [(family, "dynamo opset 18, batch 1 baked in") for family in FAMILIES if family != "batchnorm-cnn"]
    + [("padded-cnn", "legacy opset 17, hand-edited auto_pad"), ("mixer", "legacy opset 11, dynamic batch")],
)
def test_every_export_style_is_run_as_written_or_refused_at_upload(family: str, style: str) -> None:
    torch.manual_seed(0)
    module = FAMILIES[family]().eval()
    how = EXPORTS[style]
    data = zoo_export(module, how)
    if how.training_mode and any(isinstance(m, nn.BatchNorm2d | nn.Dropout) for m in module.modules()):
        with pytest.raises(ModelRejectedError, match="training mode"):
            check_onnx_model(data, task=TASK28)
        return
    summary = check_onnx_model(data, task=TASK28)
    assert summary["fine_tune"] == "available"
    conventions = ModelConventions(**{**summary["conventions"], "notes": ()})
    assert conventions.layout == ("channels-last" if how.channels_last else "channels-first")
    assert conventions.batch == how.batch
    assert conventions.outputs == ("probabilities" if how.wrap is Softmaxed else "logits")
    x = _RANDOM28.test_images[:5]
    wrapped = how.wrap(module) if how.wrap else module
    with torch.no_grad():
        expected = conventions.logits(wrapped.eval()(conventions.model_input(x)))
    torch.testing.assert_close(OnnxClassifier(data, conventions)(x), expected, atol=1e-4, rtol=1e-4)
    copy = trainable_copy(data, conventions, _RANDOM28.test_images)
    assert copy.module is not None
    torch.testing.assert_close(copy.module(x).detach(), expected, atol=1e-4, rtol=1e-4)


def test_hostile_graphs_are_refused_before_anything_runs() -> None:
    """A few bytes asking for terabytes, a loop, a graph of many nodes: refused by the static checks."""
    huge = helper.make_node(
        "ConstantOfShape",
        ["shape"],
        ["big"],
        value=onnx.numpy_helper.from_array(np.array([1.0], np.float32)),
    )
    pick = [
        helper.make_node("ReduceMean", ["big", "axes"], ["m"], keepdims=0),
        helper.make_node("Add", ["x", "m"], ["s"]),
    ]
    pool = [
        helper.make_node("AveragePool", ["s"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    bomb = _graph(
        [huge, *pick, *pool],
        ["n", 1, 16, 16],
        4,
        shape=np.array([1 << 20, 1 << 20, 16, 16], np.int64),
        axes=np.array([0, 1], np.int64),
    )
    with pytest.raises(ModelRejectedError, match="would hold"):
        check_onnx_model(bomb, task=TASK)
    endless = control_flow((1, 16, 16), 4)  # a Loop that never ends
    with pytest.raises(ModelRejectedError, match="control flow"):
        check_onnx_model(endless, task=TASK)
    chain = [helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(5001)]
    chain += [helper.make_node("AveragePool", ["t5000"], ["p"], kernel_shape=[8, 8], strides=[8, 8])]
    chain += [helper.make_node("Flatten", ["p"], ["y"])]
    with pytest.raises(ModelRejectedError, match="5003 nodes"):
        check_onnx_model(_graph(chain, ["n", 1, 16, 16], 4), task=TASK)


def test_a_huge_declared_batch_and_an_npz_header_bomb_are_refused_before_allocating(tmp_path: Path) -> None:
    huge_batch = _export(nn.Sequential(nn.AvgPool2d(8), nn.Flatten()), torch.rand(2, 1, 16, 16))
    model = onnx.load_from_string(huge_batch)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1 << 24
    with pytest.raises(ModelRejectedError, match="would hold"):
        check_onnx_model(model.SerializeToString(), task=TASK)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as archive:
        header = io.BytesIO()  # 4 TiB declared in a few hundred bytes
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20)}
        )
        archive.writestr("images.npy", header.getvalue())
        archive.writestr("labels.npy", header.getvalue())
    (tmp_path / "bomb.npz").write_bytes(bomb.getvalue())
    with pytest.raises(
        OperatorDataError,
        match=r"declares shape \(1048576, 1048576\) of <f4 \(4398046511104 bytes\) but 0 bytes follow",
    ):
        load_operator_task(tmp_path / "bomb.npz")
