"""The recipe of the default kit: ORL public faces, head-pose task, fixed seed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from edge_sdk.data.images import ImageSpec
from edge_sdk.data.orl import load_orl
from edge_sdk.devices import resolve_device
from edge_sdk.faces.alignment import ORL_TEMPLATE
from edge_sdk.fileio import write_json
from edge_sdk.kit.kit import Kit, save_kit
from edge_sdk.kit.models import Architecture
from edge_sdk.kit.training import TrainingConfig, TrainingLog, train_kit

__all__ = ["LOG_NAME", "train_orl_kit"]

LOG_NAME = "training_log.json"


def train_orl_kit(
    out: str | Path,
    *,
    config: TrainingConfig | None = None,
    architecture: Architecture | None = None,
    name: str = "orl-default",
    progress: bool = True,
    device: str | None = None,
) -> tuple[Kit, TrainingLog]:
    """Train a kit on the bundled ORL public faces, detected and aligned, and save it to ``out``.

    The generator sees all 200 public faces (s1-s20); the encoder and head see
    public-train (images 1-8 of s1-s20), so public-val (images 9-10) stays unseen.
    The training log is saved beside the weights as ``training_log.json``.
    ``device`` is where the networks train (:func:`~edge_sdk.kit.training.train_kit`).
    """
    resolve_device(device)  # a device this machine lacks fails before the faces are read
    arch = architecture or Architecture()
    spec = ImageSpec(size=arch.image_size, channels=arch.channels, face_template=ORL_TEMPLATE)
    kit, log = train_kit(
        load_orl("public", spec=spec),
        pose_train=load_orl("public-train", spec=spec),
        architecture=arch,
        spec=spec,
        config=config,
        name=name,
        data_description="ORL faces (AT&T Laboratories Cambridge), public split s1-s20; "
        "faces detected and aligned by YuNet landmarks (edge_sdk.faces); head pose labels from YuNet "
        "(edge_sdk/data/orl_pose.csv)",
        progress=progress,
        device=device,
    )
    kit = save_kit(kit, out)
    write_json(Path(out) / LOG_NAME, asdict(log))
    return kit, log
