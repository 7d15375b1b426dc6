"""Evaluation: oracles and attacks that measure what released features leak, and the harness.

One idea per module: :mod:`~edge_sdk.evaluation.identity` (the project's identity
classifier), :mod:`~edge_sdk.evaluation.oracles` (both identity oracles, SFace
included), :mod:`~edge_sdk.evaluation.attacks` (white-box, decoder, hybrid, A1, A2),
:mod:`~edge_sdk.evaluation.harness` (defences, A3, worst case) and
:mod:`~edge_sdk.evaluation.report` (JSON, Markdown, figures).
"""

from edge_sdk.evaluation.harness import DefenceResult, EvaluationConfig, EvaluationReport, evaluate, gaussian_like
from edge_sdk.evaluation.identity import IdentityClassifier, identity_accuracy, train_identity_classifier
from edge_sdk.evaluation.oracles import ClassifierOracle, OracleUnavailableError, SFaceOracle
from edge_sdk.evaluation.report import write_report

__all__ = [
    "ClassifierOracle",
    "DefenceResult",
    "EvaluationConfig",
    "EvaluationReport",
    "IdentityClassifier",
    "OracleUnavailableError",
    "SFaceOracle",
    "evaluate",
    "gaussian_like",
    "identity_accuracy",
    "train_identity_classifier",
    "write_report",
]
