"""The kit manifest: a JSON document that says what a kit's weights are and how to use them."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from edge_sdk.data.images import ImageSpec
from edge_sdk.errors import KitManifestError
from edge_sdk.kit.models import Architecture

__all__ = ["COMPONENTS", "FORMAT", "FORMAT_VERSION", "REQUIRED_COMPONENTS", "ComponentFile", "KitManifest", "TaskSpec"]

FORMAT = "edge-sdk-kit"
FORMAT_VERSION = 1
COMPONENTS = ("encoder", "head", "generator", "critic", "amortizer", "intrapersonal")
REQUIRED_COMPONENTS = ("encoder", "generator", "amortizer")
# Architecture fields added after format version 1 was fixed: a manifest written before
# them is read with their default.
_ADDED_FIELDS = ("intrapersonal_rank",)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.safetensors$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ComponentFile:
    """One weights file of the kit, named relative to the kit folder."""

    path: str
    sha256: str


@dataclass(frozen=True)
class TaskSpec:
    """The downstream task of the kit's head."""

    name: str = "head-pose"
    classes: tuple[str, ...] = ("left", "frontal", "right")


@dataclass(frozen=True)
class KitManifest:
    """Everything about a kit except its weights.

    Attributes:
        name: Human-readable kit name.
        image: Preprocessing of input pictures.
        architecture: Sizes of every network.
        task: The head's task and class names.
        files: Weights file per component name (see :data:`COMPONENTS`).
        training: Data, seed, settings and metrics of the run that made the kit.
        versions: Library versions the kit was made with.
    """

    name: str
    image: ImageSpec
    architecture: Architecture
    task: TaskSpec
    files: dict[str, ComponentFile]
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape ``(F, H, W)`` of one released feature."""
        return self.architecture.feature_shape

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dictionary."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "image": dataclasses.asdict(self.image),
            "architecture": dataclasses.asdict(self.architecture),
            "feature_shape": list(self.feature_shape),
            "task": {"name": self.task.name, "classes": list(self.task.classes)},
            "files": {k: dataclasses.asdict(v) for k, v in sorted(self.files.items())},
            "training": self.training,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str = "manifest") -> KitManifest:
        """Validate a parsed manifest.

        Raises:
            KitManifestError: A field is missing, of the wrong type or inconsistent;
                the message names the field and ``source``.
        """

        def fail(message: str) -> KitManifestError:
            return KitManifestError(f"{source}: {message}")

        def section(key: str, kind: type) -> Any:
            if key not in data:
                raise fail(f"missing field '{key}'")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise fail(f"field '{key}' must be {kind.__name__}, got {type(data[key]).__name__}")
            return data[key]

        if not isinstance(data, dict):
            raise fail("top level must be a JSON object")
        if data.get("format") != FORMAT:
            raise fail(f"field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        if section("format_version", int) != FORMAT_VERSION:
            raise fail(f"unsupported format_version {data['format_version']} (this SDK reads {FORMAT_VERSION})")
        image_values = dict(section("image", dict))
        template = image_values.pop("face_template", None)
        if template is not None and not (
            isinstance(template, list) and all(isinstance(point, list) and len(point) == 2 for point in template)
        ):
            raise fail("field 'image.face_template' must be a list of [x, y] pairs or null")
        image = _build(ImageSpec, image_values, "image", fail, extra={"face_template": template})
        arch = _build(Architecture, section("architecture", dict), "architecture", fail, optional=_ADDED_FIELDS)
        if image.size != arch.image_size or image.channels != arch.channels:
            raise fail("image size/channels disagree with architecture")
        shape = section("feature_shape", list)
        if tuple(shape) != arch.feature_shape:
            raise fail(f"feature_shape {shape} disagrees with architecture {list(arch.feature_shape)}")
        task_data = section("task", dict)
        classes = task_data.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise fail("field 'task.classes' must be a list of strings")
        if len(classes) != arch.num_classes:
            raise fail(f"task has {len(classes)} classes, architecture.num_classes is {arch.num_classes}")
        task = TaskSpec(name=str(task_data.get("name", "")), classes=tuple(classes))
        files: dict[str, ComponentFile] = {}
        for component, entry in section("files", dict).items():
            if component not in COMPONENTS:
                raise fail(f"unknown component '{component}' (known: {', '.join(COMPONENTS)})")
            if not isinstance(entry, dict):
                raise fail(f"files.{component} must be an object")
            path, digest = entry.get("path"), entry.get("sha256")
            # Plain file names only: a manifest must not point outside its kit folder.
            if not isinstance(path, str) or not _SAFE_NAME.match(path) or path.startswith(".."):
                raise fail(f"files.{component}.path must be a plain '*.safetensors' file name, got {path!r}")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise fail(f"files.{component}.sha256 must be 64 lowercase hex digits")
            files[component] = ComponentFile(path=path, sha256=digest)
        missing = [c for c in REQUIRED_COMPONENTS if c not in files]
        if missing:
            raise fail(f"files lacks required component(s): {', '.join(missing)}")
        name = section("name", str)
        training = data.get("training", {})
        versions = data.get("versions", {})
        if not isinstance(training, dict) or not isinstance(versions, dict):
            raise fail("fields 'training' and 'versions' must be objects")
        return cls(
            name=name,
            image=image,
            architecture=arch,
            task=task,
            files=files,
            training=training,
            versions={str(k): str(v) for k, v in versions.items()},
        )


def _build(
    kind: Any,
    values: dict[str, Any],
    where: str,
    fail: Any,
    extra: dict[str, Any] | None = None,
    optional: tuple[str, ...] = (),
) -> Any:
    """``kind(**values, **extra)`` with every numeric field of ``kind`` but ``optional`` ones present in ``values``."""
    extra = extra or {}
    known = {f.name: f.type for f in dataclasses.fields(kind) if f.name not in extra}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise fail(f"unknown field(s) in '{where}': {', '.join(unknown)}")
    missing = sorted(set(known) - set(values) - set(optional))
    if missing:
        raise fail(f"missing field(s) in '{where}': {', '.join(missing)}")
    for key, value in values.items():
        expected = int if known[key] in (int, "int") else float
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or (expected is int and not isinstance(value, int)):
            raise fail(f"field '{where}.{key}' must be {expected.__name__}, got {value!r}")
    try:
        return kind(**values, **extra)
    except ValueError as exc:
        raise fail(f"invalid '{where}': {exc}") from exc
