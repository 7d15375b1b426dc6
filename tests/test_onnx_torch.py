"""The verifier's ONNX -> torch converter against onnxruntime on exported classifiers."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from cloud_stub.verification.onnx_torch import UnsupportedOnnxError, onnx_to_torch
from edge_sdk.sessions import cpu_session
from exporters.onnx_export import module_to_onnx


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, stride=2, padding=2, groups=2),
        nn.ReLU(),
        nn.AvgPool2d(3, 1, 1),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(16 * 49, 32),
        nn.Tanh(),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    ).eval()


def _export(module: nn.Module, x: torch.Tensor, *, dynamo: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return module_to_onnx(module, x).SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            (x,),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}},
        )
        return buffer.getvalue()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_converted_model_matches_onnxruntime_and_trains(dynamo: bool) -> None:
    module = _cnn()
    x = torch.rand(5, 1, 28, 28)
    data = _export(module, x[:2], dynamo=dynamo)
    converted = onnx_to_torch(data)
    session = cpu_session(data)
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(converted(x).detach().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(expected, module(x).detach().numpy(), atol=1e-5)
    # Every conv and dense weight is a trainable parameter of the conversion (BN may be folded in).
    dense = sum(p.numel() for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear) for p in m.parameters())
    assert sum(p.numel() for p in converted.parameters()) >= dense
    before = converted(x).detach()
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(converted(x), torch.arange(5))
    loss.backward()
    optimizer.step()
    assert not torch.allclose(converted(x), before)


def test_unsupported_operators_are_named() -> None:
    node = helper.make_node("Einsum", ["image", "image"], ["logits"], equation="bi,bj->bj")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedOnnxError, match="Einsum"):
        onnx_to_torch(model)


def _run_both(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], x: np.ndarray, *, opset: int = 18
) -> None:
    """The converter and onnxruntime give the same output on a hand-built graph."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    data = model.SerializeToString()
    session = cpu_session(data)
    expected = session.run(None, {"image": x})[0]
    np.testing.assert_allclose(onnx_to_torch(data)(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
def test_auto_pad_matches_onnxruntime(auto_pad: str, stride: int) -> None:
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.normal(size=(3, 2, 4, 3)).astype(np.float32), "w")
    x = rng.normal(size=(2, 2, 17, 16)).astype(np.float32)
    conv = helper.make_node("Conv", ["image", "w"], ["c"], auto_pad=auto_pad, strides=[stride, stride])
    pool = helper.make_node("MaxPool", ["c"], ["p"], auto_pad=auto_pad, kernel_shape=[3, 2], strides=[stride, 1])
    average = helper.make_node("AveragePool", ["p"], ["out"], auto_pad=auto_pad, kernel_shape=[2, 3])
    _run_both([conv, pool, average], [weight], x)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_matches_onnxruntime(mode: str) -> None:
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 6)).astype(np.float32)
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    value = onnx.numpy_helper.from_array(np.array(0.5, np.float32), "value")
    inputs = ["image", "pads", "value"] if mode == "constant" else ["image", "pads"]
    _run_both([helper.make_node("Pad", inputs, ["out"], mode=mode)], [pads, value], x)


def test_negative_step_slice_and_layer_norm_match_onnxruntime() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    tensors = [
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "start"),
        onnx.numpy_helper.from_array(np.array([-(2**62)], np.int64), "end"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), "axis"),
        onnx.numpy_helper.from_array(np.array([-2], np.int64), "step"),
        onnx.numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "scale"),
        onnx.numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "start", "end", "axis", "step"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "scale", "bias"], ["ln"], axis=-1),
        helper.make_node("Gelu", ["ln"], ["out"]),
    ]
    _run_both(nodes, tensors, x, opset=20)


def test_batchnorm_statistics_are_buffers_and_training_mode_is_refused() -> None:
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    with torch.no_grad():
        module[1].running_var.fill_(0.25)
    x = torch.rand(3, 1, 28, 28)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), buffer, dynamo=False, do_constant_folding=False)
    converted = onnx_to_torch(buffer.getvalue())
    assert sorted(b.numel() for b in converted.buffers()) == [4, 4]  # running mean and variance
    assert not any(torch.equal(p, module[1].running_var) for p in converted.parameters())
    optimizer = torch.optim.SGD(converted.parameters(), lr=10.0)
    nn.functional.cross_entropy(converted(x), torch.arange(3)).backward()
    optimizer.step()
    assert min(float(b.min()) for b in converted.buffers()) == pytest.approx(0.0, abs=1.0)  # untouched by SGD
    assert torch.equal(sorted(converted.buffers(), key=lambda b: float(b.sum()))[-1], module[1].running_var)
    training = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.train(), (x,), training, dynamo=False, training=torch.onnx.TrainingMode.TRAINING)
    with pytest.raises(UnsupportedOnnxError, match="training mode"):
        onnx_to_torch(training.getvalue())


def test_shared_batchnorm_initializers_empty_slices_and_one_axis_reflect_padding() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    # bias and running mean are one initializer "z", scale and variance one "o": the bias still trains.
    initializers = [
        onnx.numpy_helper.from_array(np.zeros(3, np.float32), "z"),
        onnx.numpy_helper.from_array(np.ones(3, np.float32), "o"),
    ]
    shared = [helper.make_node("BatchNormalization", ["image", "o", "z", "z", "o"], ["out"])]
    _run_both(shared, initializers, x)
    graph = helper.make_graph(
        shared,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    module = onnx_to_torch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    module(torch.from_numpy(x)).sum().backward()
    assert len(list(module.parameters())) == 2 and all(p.grad is not None for p in module.parameters())
    assert len(list(module.buffers())) == 2
    empty = [
        onnx.numpy_helper.from_array(np.array([4], np.int64), "start"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), "end"),
        onnx.numpy_helper.from_array(np.array([3], np.int64), "axis"),
    ]
    sliced = [
        helper.make_node("Slice", ["image", "start", "end", "axis"], ["s"]),
        helper.make_node("Identity", ["s"], ["out"]),
    ]
    _run_both(sliced, empty, x)
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 0, 2, 0, 0, 0, 1], np.int64), "pads")
    _run_both([helper.make_node("Pad", ["image", "pads"], ["out"], mode="reflect")], [pads], x)
