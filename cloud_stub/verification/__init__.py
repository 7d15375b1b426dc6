"""Is an uploaded classifier vicious? Tasks and data, Algorithm 1, reconstruction risk, the detector, defences.

One idea per module: :mod:`~cloud_stub.verification.tasks` (claimed tasks and their
data), :mod:`~cloud_stub.verification.networks` and :mod:`~cloud_stub.verification.vicious`
(honest and vicious training, decoders from outputs; R, Eq. 6, is :mod:`edge_sdk.metrics`),
:mod:`~cloud_stub.verification.runtime` (uploads run in onnxruntime with the conventions
their exporter chose, found on task images), :mod:`~cloud_stub.verification.onnx_torch`
(uploads made trainable), :mod:`~cloud_stub.verification.operator_data` (an operator's own
labelled images as a task), :mod:`~cloud_stub.verification.zoo` (model families and export
styles of the zoo benchmark and tests),
:mod:`~cloud_stub.verification.detector` (signals and verdict),
:mod:`~cloud_stub.verification.defences` (output post-processing, SSD) and
:mod:`~cloud_stub.verification.verify` (``verify_onnx``, the entry point of the CLI and the
service; import it from there, it depends on :mod:`cloud_stub.uploads`).
"""

from cloud_stub.verification.detector import DetectorConfig, VerificationReport, verify_classifier
from cloud_stub.verification.onnx_torch import UnsupportedOnnxError, onnx_to_torch
from cloud_stub.verification.operator_data import OperatorDataError, load_operator_task
from cloud_stub.verification.runtime import ModelConventions, OnnxClassifier, inspect_classifier
from cloud_stub.verification.tasks import MODEL_TASKS, ModelTask, TaskDataError, load_task_data
from edge_sdk.metrics import MahalanobisMetric, reconstruction_risk

__all__ = [
    "MODEL_TASKS",
    "DetectorConfig",
    "MahalanobisMetric",
    "ModelConventions",
    "ModelTask",
    "OnnxClassifier",
    "OperatorDataError",
    "TaskDataError",
    "UnsupportedOnnxError",
    "VerificationReport",
    "inspect_classifier",
    "load_operator_task",
    "load_task_data",
    "onnx_to_torch",
    "reconstruction_risk",
    "verify_classifier",
]
