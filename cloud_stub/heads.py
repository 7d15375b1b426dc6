"""Heads served by the cloud: the kit's head at first, then heads trained on collected features."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_state
from safetensors.torch import save as save_state

from cloud_stub.errors import ConflictError
from edge_sdk.kit.models import Architecture, PoseHead

if TYPE_CHECKING:
    from cloud_stub.store import Store

__all__ = ["HeadFit", "ServedHead", "fit_head", "head_from_bytes", "head_to_bytes"]


def head_to_bytes(head: PoseHead) -> bytes:
    """A head's weights as safetensors bytes (what the store keeps)."""
    return save_state({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()})


def head_from_bytes(state: bytes, arch: Architecture) -> PoseHead:
    """Rebuild a head of ``arch`` from safetensors bytes, in eval mode."""
    head = PoseHead(arch)
    head.load_state_dict(load_state(state))
    return head.eval()


@dataclass(frozen=True)
class HeadFit:
    """A head trained on collected features, with its held-out accuracy."""

    head: PoseHead
    val_accuracy: float
    train_accuracy: float
    train_samples: int
    val_samples: int


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    arch: Architecture,
    epochs: int = 40,
    seed: int = 0,
    validation_fraction: float = 0.2,
    lr: float = 2e-3,
    batch_size: int = 32,
) -> HeadFit:
    """Train a fresh head of the kit's architecture on (crafted feature, label) pairs.

    A seeded random ``validation_fraction`` of the samples is held out and the
    accuracy on it is recorded with the head.

    Raises:
        ConflictError: Too few samples to hold out a validation set.

    Example:
        >>> from edge_sdk.kit.models import Architecture
        >>> arch = Architecture(feature_channels=4, head_width=8)
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 3, 60)
        >>> features = rng.normal(size=(60, 4, 16, 16)) + 2.0 * labels[:, None, None, None]
        >>> fit_head(features, labels, arch=arch, epochs=30).val_accuracy > 0.9
        True
    """
    n = len(labels)
    n_val = round(n * validation_fraction)
    if n_val < 1 or n - n_val < 2:
        raise ConflictError(f"{n} samples are too few to train a head with validation fraction {validation_fraction}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    val_idx, train_idx = order[:n_val], order[n_val:]
    with torch.random.fork_rng(devices=[]):  # seeded by the argument, the caller's state untouched
        torch.manual_seed(seed)  # the head's initial weights
        head = PoseHead(arch)
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
        head.train()
        for _ in range(epochs):
            perm = train_idx[torch.randperm(len(train_idx), generator=generator)]
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        head.eval()
        with torch.no_grad():
            val_accuracy = float((head(x[val_idx]).argmax(1) == y[val_idx]).float().mean())
            train_accuracy = float((head(x[train_idx]).argmax(1) == y[train_idx]).float().mean())
        return HeadFit(
            head=head,
            val_accuracy=val_accuracy,
            train_accuracy=train_accuracy,
            train_samples=len(train_idx),
            val_samples=n_val,
        )


class ServedHead:
    """The head that answers predictions; swapped atomically when a new one is activated."""

    def __init__(self, head: PoseHead | None = None, head_id: int | None = None) -> None:
        self._lock = threading.Lock()
        self._current = (head.eval() if head is not None else None, head_id)
        self._checked = time.monotonic()

    def refresh(self, store: Store, arch: Architecture, *, min_interval: float = 1.0) -> None:
        """Follow the store's active head, at most once per ``min_interval`` seconds.

        With one process the swap after training already did this; with several
        replicas (Ray Serve) it is how the others learn of a newly trained head.
        """
        now = time.monotonic()
        if now - self._checked < min_interval:
            return
        self._checked = now
        active = store.active_head_id()
        if active is not None and active != self.head_id:
            self.swap(head_from_bytes(store.head_state(active), arch), active)

    @property
    def head_id(self) -> int | None:
        """Id of the head now served, ``None`` if there is none yet."""
        return self._current[1]

    def swap(self, head: PoseHead, head_id: int) -> None:
        """Serve ``head`` from the next request on."""
        with self._lock:
            self._current = (head.eval(), head_id)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """``(labels, probabilities, head_id)`` for a checked feature batch.

        Raises:
            ConflictError: No head is served yet (a kit without head, nothing trained).
        """
        head, head_id = self._current  # one read: a concurrent swap never mixes two heads
        if head is None or head_id is None:
            raise ConflictError("no head to serve yet: collect labelled features and train one")
        with torch.inference_mode():
            probabilities = torch.softmax(head(torch.from_numpy(features)), dim=1).numpy()
        return probabilities.argmax(1), probabilities, head_id
