"""Export kit networks to ONNX, check them with ``onnx.checker`` and against torch.

The exporter is torch's default one (``torch.onnx.export(dynamo=True)``, which
needs ``onnxscript``): it is the maintained path, and on every kit network it
matched torch as closely as the legacy TorchScript exporter (max abs difference
below 1e-5 on both). Every export is followed by a parity check on real kit
inputs under onnxruntime's CPU provider; an export that breaks parity fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_sdk.data.orl import load_orl
from edge_sdk.errors import EdgeSDKError
from edge_sdk.fileio import atomic_write
from edge_sdk.kit.kit import Kit
from edge_sdk.sessions import cpu_session

__all__ = [
    "EXPORTABLE",
    "ExportReport",
    "ParityError",
    "check_parity",
    "export_component",
    "module_to_onnx",
    "parity_inputs",
    "run_onnx",
]

EXPORTABLE = ("encoder", "head", "amortizer", "generator")
RTOL, ATOL = 1e-3, 1e-5


class ParityError(EdgeSDKError):
    """An exported model's onnxruntime outputs differ from torch's beyond tolerance."""


@dataclass(frozen=True)
class ExportReport:
    """One exported network.

    Attributes:
        component: Kit component name.
        path: Written ``.onnx`` file.
        bytes: File size.
        max_abs_diff: Largest ``|onnxruntime - torch|`` on the parity inputs.
        max_rel_diff: Largest difference relative to ``|torch|`` (where nonzero).
        parity_ok: Whether ``allclose(rtol=1e-3, atol=1e-5)`` held.
        seconds: Export plus check time.
    """

    component: str
    path: Path
    bytes: int
    max_abs_diff: float
    max_rel_diff: float
    parity_ok: bool
    seconds: float


def parity_inputs(kit: Kit, component: str, *, count: int = 16) -> torch.Tensor:
    """Real inputs for a component: public-val faces, their features, or seeded latents."""
    if component == "generator":
        return torch.randn(count, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(0))
    images = load_orl("public-val", spec=kit.spec).images[:count]
    return images if component == "encoder" else kit.encode(images)


def module_to_onnx(module: torch.nn.Module, example: torch.Tensor, *, opset: int = 18) -> onnx.ModelProto:
    """Export a single-input module with torch's default exporter and a dynamic batch axis.

    Example:
        >>> model = module_to_onnx(torch.nn.Linear(3, 2), torch.zeros(2, 3))
        >>> [n.op_type for n in model.graph.node]
        ['Gemm']
    """
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter narrates each stage
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    assert program is not None
    return program.model_proto


def run_onnx(path: str | Path, inputs: np.ndarray) -> np.ndarray:
    """Output of a single-input ONNX model under onnxruntime's CPU provider."""
    session = cpu_session(path)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: inputs})[0])


def check_parity(path: str | Path, module: torch.nn.Module, inputs: torch.Tensor) -> tuple[float, float, bool]:
    """Run ``path`` under onnxruntime and ``module`` in torch on ``inputs``; compare.

    Returns:
        Max absolute and relative difference, and whether ``allclose`` held.
    """
    ours = run_onnx(path, inputs.numpy())
    with torch.no_grad():
        reference = module.eval()(inputs).numpy()
    diff = np.abs(ours - reference)
    rel = diff / np.maximum(np.abs(reference), 1e-12)
    ok = bool(np.allclose(ours, reference, rtol=RTOL, atol=ATOL))
    return float(diff.max()), float(rel[np.abs(reference) > ATOL].max(initial=0.0)), ok


def export_component(kit: Kit, component: str, path: str | Path, *, opset: int = 18) -> ExportReport:
    """Export one kit network to ONNX with a dynamic batch axis and the kit manifest in its metadata.

    Raises:
        ValueError: Unknown component or one the kit lacks.
        ParityError: onnxruntime disagrees with torch beyond ``rtol=1e-3, atol=1e-5``
            (the file is still written, for inspection).
    """
    if component not in EXPORTABLE:
        raise ValueError(f"cannot export {component!r}; choose from {', '.join(EXPORTABLE)}")
    module = kit.components().get(component)
    if module is None:
        raise ValueError(f"the kit has no {component}")
    start = time.perf_counter()
    path = Path(path)
    example = parity_inputs(kit, component, count=2)  # batch >= 2 keeps the batch axis symbolic

    def write(tmp: Path) -> None:
        model = module_to_onnx(module, example, opset=opset)
        for key, value in (
            ("edge_sdk.component", component),
            ("edge_sdk.kit_manifest", json.dumps(kit.manifest.to_json(), sort_keys=True)),
        ):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))

    atomic_write(path, write)
    abs_diff, rel_diff, ok = check_parity(path, module, parity_inputs(kit, component))
    report = ExportReport(component, path, path.stat().st_size, abs_diff, rel_diff, ok, time.perf_counter() - start)
    if not ok:
        raise ParityError(f"{path}: onnxruntime differs from torch by up to {abs_diff:.3g} (rtol {RTOL}, atol {ATOL})")
    return report
