"""A kit: the networks a device needs plus their manifest, stored as safetensors + JSON."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import edge_sdk
from edge_sdk.data.images import ImageSpec
from edge_sdk.errors import (
    KitChecksumError,
    KitFileMissingError,
    KitManifestError,
    KitNotFoundError,
    KitWeightsError,
    OutputWriteError,
)
from edge_sdk.fileio import atomic_write
from edge_sdk.kit.manifest import COMPONENTS, ComponentFile, KitManifest
from edge_sdk.kit.models import (
    Amortizer,
    Architecture,
    Critic,
    Encoder,
    Generator,
    IntrapersonalSubspace,
    PoseHead,
    build_models,
)
from edge_sdk.validation import check_batch

__all__ = ["MANIFEST_NAME", "Kit", "default_kit_path", "load_kit", "save_kit"]

MANIFEST_NAME = "manifest.json"


@dataclass
class Kit:
    """The networks of a kit, in eval mode, with their manifest.

    Attributes:
        manifest: What the kit is (preprocessing, shapes, training record).
        encoder: Image to feature; runs on the device.
        generator: Latent to image; the simulated attacker's prior.
        amortizer: Feature to latent; warm start of the inversion.
        head: Feature to task logits (deployment scenario), if the kit has one.
        critic: WGAN-GP critic from the generator's training, if kept.
        intrapersonal: How one person's features vary, fitted on the public faces
            (the ``"intrapersonal"`` crafting utility keeps a release's coordinates in it).
        path: Folder the kit was loaded from, if any.
    """

    manifest: KitManifest
    encoder: Encoder
    generator: Generator
    amortizer: Amortizer
    head: PoseHead | None = None
    critic: Critic | None = None
    intrapersonal: IntrapersonalSubspace | None = None
    path: Path | None = None

    @property
    def spec(self) -> ImageSpec:
        """Image preprocessing of this kit."""
        return self.manifest.image

    @property
    def architecture(self) -> Architecture:
        """Network sizes of this kit."""
        return self.manifest.architecture

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape ``(F, H, W)`` of one feature."""
        return self.manifest.feature_shape

    def components(self) -> dict[str, nn.Module]:
        """The networks present in this kit, by component name."""
        found = {name: getattr(self, name) for name in COMPONENTS}
        return {name: module for name, module in found.items() if module is not None}

    @property
    def device(self) -> torch.device:
        """Where the kit's networks are."""
        return next(self.encoder.parameters()).device

    def to(self, device: torch.device) -> Kit:
        """The kit on ``device``: itself if already there, else a copy (the original stays where it is)."""
        if self.device == device:
            return self
        moved = {name: copy.deepcopy(module).to(device) for name, module in self.components().items()}
        return replace(self, **moved)  # type: ignore[arg-type]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode a batch of preprocessed images ``(B, C, S, S)`` into features, on the kit's device.

        Raises:
            TensorShapeError: The batch does not match the kit's image shape.
            NonFiniteError: The batch holds NaN or infinity.
        """
        images = check_batch(images, self.architecture.image_shape, name="images")
        with torch.no_grad():
            return self.encoder(images.to(self.device))


def default_kit_path() -> Path:
    """Folder of the default kit shipped inside the package."""
    return Path(str(resources.files("edge_sdk") / "kits" / "default"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_kit(path: str | Path | None = None, *, verify: bool = True) -> Kit:
    """Load a kit folder; ``None`` loads the default kit shipped in the package.

    Args:
        path: Kit folder holding ``manifest.json`` and the weights it names.
        verify: Check each weights file against the SHA-256 in the manifest.

    Returns:
        The kit, every network in eval mode.

    Raises:
        KitNotFoundError: No such folder or no manifest in it.
        KitManifestError: The manifest is not valid JSON or breaks the schema.
        KitFileMissingError: A weights file named by the manifest is absent.
        KitChecksumError: A weights file was altered since the manifest was written.
        KitWeightsError: A weights file is unreadable or does not fit the architecture.

    Example:
        >>> kit = load_kit()
        >>> kit.feature_shape
        (32, 16, 16)
    """
    folder = Path(path) if path is not None else default_kit_path()
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise KitNotFoundError(f"{folder}: kit folder does not exist")
    if not manifest_path.is_file():
        raise KitNotFoundError(f"{folder}: no {MANIFEST_NAME} in kit folder")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KitManifestError(f"{manifest_path}: not valid JSON ({exc})") from exc
    manifest = KitManifest.from_json(data, source=str(manifest_path))
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; keep the caller's random stream
        modules = build_models(manifest.architecture)
    loaded: dict[str, nn.Module] = {}
    for component, entry in manifest.files.items():
        file = folder / entry.path
        if not file.is_file():
            raise KitFileMissingError(f"{file}: weights of '{component}' named in the manifest are missing")
        if verify and _sha256(file) != entry.sha256:
            raise KitChecksumError(f"{file}: SHA-256 differs from the manifest; the file was altered")
        try:
            state = load_file(str(file))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise KitWeightsError(f"{file}: unreadable safetensors file ({exc})") from exc
        module = modules[component]
        expected = module.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [
            f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
            for key in sorted(set(state) & set(expected))
            if state[key].shape != expected[key].shape
        ]
        if missing or unexpected or wrong:
            details = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing[:5])}" if missing else "",
                    f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
                    f"wrong shape {', '.join(wrong[:5])}" if wrong else "",
                )
                if part
            )
            raise KitWeightsError(f"{file}: tensors do not fit the '{component}' architecture: {details}")
        module.load_state_dict(state)
        loaded[component] = module.eval()
    return Kit(
        manifest=manifest,
        encoder=loaded["encoder"],  # type: ignore[arg-type]
        generator=loaded["generator"],  # type: ignore[arg-type]
        amortizer=loaded["amortizer"],  # type: ignore[arg-type]
        head=loaded.get("head"),  # type: ignore[arg-type]
        critic=loaded.get("critic"),  # type: ignore[arg-type]
        intrapersonal=loaded.get("intrapersonal"),  # type: ignore[arg-type]
        path=folder,
    )


def save_kit(kit: Kit, path: str | Path) -> Kit:
    """Write a kit folder: one safetensors file per network, then the manifest.

    The manifest is written last and atomically, so a folder whose manifest exists
    always names complete weights files.

    Returns:
        The kit with its manifest updated to the written files and checksums.

    Raises:
        OutputWriteError: The folder cannot be written (full disk, permissions).
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"{folder}: cannot create kit folder ({exc.strerror or exc})") from exc
    files: dict[str, ComponentFile] = {}
    for component, module in kit.components().items():
        file = folder / f"{component}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        # One metadata key only: safetensors stores metadata as a hash map whose order
        # is not fixed, and re-saving a kit must give byte-identical files.
        metadata = {"edge_sdk_component": component}

        def write(tmp: Path, state: dict[str, torch.Tensor] = state, metadata: dict[str, str] = metadata) -> None:
            save_file(state, str(tmp), metadata=metadata)

        atomic_write(file, write)
        files[component] = ComponentFile(path=file.name, sha256=_sha256(file))
    versions = {"edge_sdk": edge_sdk.__version__, "torch": torch.__version__.split("+")[0]}
    manifest = replace(kit.manifest, files=files, versions={**kit.manifest.versions, **versions})
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    atomic_write(folder / MANIFEST_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return replace(kit, manifest=manifest, path=folder)
