"""Evaluation: oracles and attacks that measure what crafted features leak."""

from edge_sdk.evaluation.identity import IdentityClassifier, identity_accuracy, train_identity_classifier

__all__ = ["IdentityClassifier", "identity_accuracy", "train_identity_classifier"]
