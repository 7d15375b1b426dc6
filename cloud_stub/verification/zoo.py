"""Classifiers as operators export them: model families and export styles of the verifier's zoo.

``benchmarks/verifier_zoo.py`` trains these families honestly and viciously and
verifies every export style; the tests export untrained ones to check each style is
run or refused at upload. Fashion-MNIST-sized: ``(B, 1, 28, 28)`` -> 10 classes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cloud_stub.verification.networks import TaskClassifier

__all__ = ["EXPORTS", "FAMILIES", "ChannelsLast", "Export", "Pixels255", "Softmaxed", "export"]


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BatchNormCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(32 * 49, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PaddedCnn(nn.Module):
    """Pads its input and each block with ``F.pad`` (as the vicious paper's WideResNet does) and pools globally."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3, stride=2), nn.Conv2d(64, 64, 3, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        x = F.relu(self.c2(F.pad(x, (1, 1, 1, 1))))
        x = F.relu(self.c3(F.pad(x, (1, 1, 1, 1))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Mixer(nn.Module):
    """Patches of 4x4 pixels, a LayerNorm + GELU MLP block and mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 64, 4, stride=4)
        self.norm = nn.LayerNorm(64)
        self.mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: TaskClassifier(input_shape=(1, 28, 28), num_classes=10),
    "mlp": Mlp,
    "batchnorm-cnn": BatchNormCnn,
    "padded-cnn": PaddedCnn,
    "mixer": Mixer,
}


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class ChannelsLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


class Pixels255(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x / 255.0)


@dataclass(frozen=True)
class Export:
    """One way of writing a trained model to ONNX."""

    name: str
    dynamo: bool = False
    opset: int = 17
    batch: int | None = None  # fixed batch size, None for dynamic
    wrap: Callable[[nn.Module], nn.Module] | None = None
    channels_last: bool = False
    keep_batchnorm: bool = False
    training_mode: bool = False
    auto_pad: bool = False


EXPORTS = {
    e.name: e
    for e in (
        Export("legacy opset 11, dynamic batch", opset=11),
        Export("legacy opset 13, batch 1", opset=13, batch=1),
        Export("legacy opset 17, dynamic batch", opset=17),
        Export("dynamo opset 18, batch 1 baked in", dynamo=True, opset=18, batch=1),
        Export("dynamo opset 18, dynamic batch", dynamo=True, opset=18),
        Export("dynamo opset 20, dynamic batch", dynamo=True, opset=20),
        Export("legacy opset 17, Softmax output", opset=17, wrap=Softmaxed),
        Export("dynamo opset 18, Softmax output, batch 1", dynamo=True, opset=18, batch=1, wrap=Softmaxed),
        Export("legacy opset 13, channels-last", opset=13, wrap=ChannelsLast, channels_last=True),
        Export("legacy opset 17, pixels in [0, 255]", opset=17, wrap=Pixels255),
        Export("legacy opset 12, BatchNorm nodes kept", opset=12, keep_batchnorm=True),
        Export("legacy opset 17, hand-edited auto_pad", opset=17, auto_pad=True),
        Export("legacy opset 17, training mode", opset=17, training_mode=True),
    )
}


def _auto_pad(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite explicit pads as tf2onnx writes them: SAME_UPPER where that is what they mean, VALID for none."""
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        pads, strides = list(attrs.get("pads", [0, 0, 0, 0])), list(attrs.get("strides", [1, 1]))
        kernel = list(attrs.get("kernel_shape", []))
        same = strides == [1, 1] and kernel and all(p == (k - 1) // 2 for p, k in zip(pads, kernel * 2, strict=True))
        if not any(pads) or same:
            del node.attribute[:]
            keep = {k: v for k, v in attrs.items() if k != "pads"}
            node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in keep.items())
            node.attribute.append(onnx.helper.make_attribute("auto_pad", "VALID" if not any(pads) else "SAME_UPPER"))
    return model


def export(model: nn.Module, how: Export) -> bytes:
    module = how.wrap(model) if how.wrap else model
    shape = (28, 28, 1) if how.channels_last else (1, 28, 28)
    example = torch.rand(how.batch or 2, *shape)
    if how.wrap is Pixels255:
        example = example * 255
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how.dynamo:
            dynamic = None if how.batch else ({0: torch.export.Dim("batch")},)
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, opset_version=how.opset, dynamic_shapes=dynamic
            )
            assert program is not None
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        mode = torch.onnx.TrainingMode.TRAINING if how.training_mode else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(
            module.train(how.training_mode),
            (example,),
            buffer,  # type: ignore[arg-type]  # a file object is accepted too
            dynamo=False,
            opset_version=how.opset,
            training=mode,
            do_constant_folding=not (how.keep_batchnorm or how.training_mode),
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes=None if how.batch else {"image": {0: "batch"}, "scores": {0: "batch"}},
        )
        module.eval()
    data = buffer.getvalue()
    return _auto_pad(onnx.load_from_string(data)).SerializeToString() if how.auto_pad else data
