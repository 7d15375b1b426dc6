"""YuNet face detection on onnxruntime: boxes, five landmarks and a score per face.

The model is OpenCV Zoo's ``face_detection_yunet_2023mar`` (Apache-2.0; see
``models/NOTICE.md``), folded to float weights by ``scripts/convert_yunet.py`` so that
onnxruntime runs it. The prior decoding and non-maximum suppression follow OpenCV's
``cv::FaceDetectorYN`` (``modules/objdetect/src/face_detect.cpp``), which
``tests/test_faces.py`` uses as the reference on the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from edge_sdk.faces.alignment import warp_similarity
from edge_sdk.sessions import cpu_session

__all__ = ["YUNET_MODEL", "Face", "YuNetDetector", "default_detector", "non_maximum_suppression"]

YUNET_MODEL = Path(__file__).with_name("models") / "face_detection_yunet_2023mar.onnx"

# The exported graph has a static 640x640 input; pictures are scaled into it and
# padded at the right and bottom with zeros, as OpenCV pads to its input size.
_INPUT_SIDE = 640
_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the picture it was found in.

    Attributes:
        box: ``(x, y, width, height)`` of the face box, pixels.
        landmarks: ``(5, 2)`` float32 ``(x, y)`` of the right eye, left eye, nose tip,
            right mouth corner and left mouth corner (the subject's right and left).
        score: Detection confidence in ``[0, 1]``.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels (how "largest face" is decided)."""
        return max(self.box[2], 0.0) * max(self.box[3], 0.0)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float, top_k: int) -> np.ndarray:
    """Greedy NMS as ``cv2.dnn.NMSBoxes``: indices kept, best score first.

    Args:
        boxes: ``(N, 4)`` ``(x, y, width, height)``.
        scores: ``(N,)``.
        iou_threshold: A box overlapping a kept one by more than this is dropped.
        top_k: At most this many candidates, best first, are considered.

    Returns:
        ``(K,)`` int64 indices into ``boxes``.
    """
    order = np.argsort(-scores, kind="stable")[:top_k]
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    kept: list[int] = []
    for index in order:
        if kept:
            others = np.asarray(kept)
            width = np.clip(np.minimum(x2[index], x2[others]) - np.maximum(x1[index], x1[others]), 0, None)
            height = np.clip(np.minimum(y2[index], y2[others]) - np.maximum(y1[index], y1[others]), 0, None)
            inter = width * height
            union = area[index] + area[others] - inter
            if np.any(inter > iou_threshold * np.maximum(union, 1e-12)):
                continue
        kept.append(int(index))
    return np.asarray(kept, dtype=np.int64)


class YuNetDetector:
    """Finds faces and their five landmarks in a picture.

    Args:
        score_threshold: Candidates scoring below this are dropped (OpenCV's default
            is 0.9; faces in small, grey or low-contrast photos score lower).
        nms_threshold: IoU above which the weaker of two boxes is suppressed.
        top_k: Candidates kept before NMS.
        detect_sides: The picture is resized so that its longer side has each of these
            many pixels (up or down) and searched at each size; the candidates of all
            sizes share one NMS. A size above the picture's longer side is skipped
            unless it is the first, so small pictures are searched once and large
            photos also at a finer scale where small faces are found.
        refine_contexts: Each face found is searched again in squares of these many
            times its box's longer side, each resampled to ``refine_side`` pixels and
            also mirrored, and the landmarks are averaged, so they are estimated at the
            same scales however the face was framed in the picture (empty: no second
            pass).
        refine_side: Side of the second pass's canvas, pixels.
        threads: onnxruntime intra-op threads (``None``: its default).
        model: Path of the YuNet ONNX file.

    Example:
        >>> import numpy as np
        >>> YuNetDetector().detect(np.zeros((120, 100, 3), np.float32))
        []
    """

    def __init__(
        self,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        detect_sides: tuple[int, ...] = (320, 640),
        refine_contexts: tuple[float, ...] = (1.3, 1.5, 1.7, 1.9),
        refine_side: int = 320,
        threads: int | None = None,
        model: str | Path = YUNET_MODEL,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not detect_sides or not all(32 <= side <= _INPUT_SIDE for side in detect_sides):
            raise ValueError(f"detect_sides must be sizes in [32, {_INPUT_SIDE}], got {detect_sides}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        if any(context <= 0 for context in refine_contexts) or not 32 <= refine_side <= _INPUT_SIDE:
            raise ValueError(f"need positive refine_contexts and refine_side in [32, {_INPUT_SIDE}]")
        self.detect_sides = tuple(detect_sides)
        self.refine_contexts = tuple(refine_contexts)
        self.refine_side = refine_side
        self._session = cpu_session(model, threads=threads)
        self._input = self._session.get_inputs()[0].name

    @staticmethod
    def network_input(picture: np.ndarray, side: int) -> tuple[np.ndarray, float]:
        """The ``(1, 3, 640, 640)`` BGR 0-255 input for ``picture`` and the scale applied.

        Args:
            picture: ``(H, W, 3)`` float32 RGB in ``[0, 1]``.
            side: Longer side of the picture once resized, pixels.
        """
        height, width = picture.shape[:2]
        scale = side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb8 = Image.fromarray(np.clip(picture * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
        resized = np.asarray(rgb8.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        canvas = np.zeros((_INPUT_SIDE, _INPUT_SIDE, 3), np.float32)
        canvas[: size[1], : size[0]] = resized
        return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None]), scale

    def decode(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Candidates ``(N, 15)`` from the network's 12 outputs, as OpenCV lays them out.

        Columns: box ``x, y, w, h``; five landmarks ``x, y``; score. Coordinates are in
        the 640x640 input. Scores below ``score_threshold`` are dropped here.
        """
        rows: list[np.ndarray] = []
        count = len(_STRIDES)
        for level, stride in enumerate(_STRIDES):
            cls, obj, bbox, kps = (outputs[level + count * k][0] for k in range(4))
            side = _INPUT_SIDE // stride
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            if keep.size == 0:
                continue
            col, row = (keep % side).astype(np.float32), (keep // side).astype(np.float32)
            cx, cy = (col + bbox[keep, 0]) * stride, (row + bbox[keep, 1]) * stride
            w, h = np.exp(bbox[keep, 2]) * stride, np.exp(bbox[keep, 3]) * stride
            points = kps[keep].reshape(-1, 5, 2)
            points = (points + np.stack([col, row], axis=1)[:, None, :]) * stride
            rows.append(
                np.concatenate(
                    [np.stack([cx - w / 2, cy - h / 2, w, h], axis=1), points.reshape(-1, 10), score[keep, None]],
                    axis=1,
                )
            )
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 15), np.float32)

    def _search(self, picture: np.ndarray, sides: tuple[int, ...]) -> np.ndarray:
        """Candidates ``(N, 15)`` in picture coordinates from one pass per size, before NMS."""
        longer = max(picture.shape[:2])
        found = []
        for index, side in enumerate(sides):
            if index > 0 and side > longer:
                continue
            blob, scale = self.network_input(picture, side)
            candidates = self.decode(self._session.run(None, {self._input: blob}))
            candidates[:, :14] /= scale
            found.append(candidates)
        return np.concatenate(found)

    def _search_canvas(self, canvas: np.ndarray) -> np.ndarray | None:
        """The candidate nearest the centre of a square canvas, ``(15,)``, or ``None``."""
        candidates = self._search(canvas, (canvas.shape[0],))
        if len(candidates) == 0:
            return None
        centres = candidates[:, :2] + candidates[:, 2:4] / 2
        return candidates[int(np.argmin(np.linalg.norm(centres - canvas.shape[0] / 2, axis=1)))]

    def refine(self, picture: np.ndarray, face: Face) -> Face:
        """``face`` searched again at fixed scales around its box, and mirrored; itself if never found.

        Landmarks are averaged over the passes (each context in ``refine_contexts``, the
        canvas and its mirror image), which takes out most of the landmark jitter that
        the framing of the face and its background cause.
        """
        x, y, width, height = face.box
        side = self.refine_side
        rows = []
        for context in self.refine_contexts:
            scale = side / (context * max(width, height, 1e-6))
            offset = side / 2 - scale * np.array([x + width / 2, y + height / 2])
            canvas = warp_similarity(
                picture, np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]]), (side, side)
            )
            for mirrored in (False, True):
                best = self._search_canvas(canvas[:, ::-1] if mirrored else canvas)
                if best is None:
                    continue
                box, points = best[:4].copy(), best[4:14].reshape(5, 2).copy()
                if mirrored:  # back to the canvas; the subject's right eye is the mirror's left
                    box[0] = side - box[0] - box[2]
                    points[:, 0] = side - points[:, 0]
                    points = points[[1, 0, 2, 4, 3]]
                box[:2] = (box[:2] - offset) / scale
                box[2:] /= scale
                rows.append(np.concatenate([box, ((points - offset) / scale).ravel(), best[14:]]))
        if not rows:
            return face
        mean = np.mean(rows, axis=0)
        return Face(
            box=(float(mean[0]), float(mean[1]), float(mean[2]), float(mean[3])),
            landmarks=mean[4:14].reshape(5, 2).astype(np.float32),
            score=float(mean[14]),
        )

    def detect(self, picture: np.ndarray) -> list[Face]:
        """Faces in ``picture``, best score first.

        Args:
            picture: ``(H, W, 3)`` float32 RGB in ``[0, 1]`` (grayscale replicated).

        Returns:
            The faces after NMS, in the picture's pixel coordinates.

        Raises:
            ValueError: ``picture`` is not ``(H, W, 3)``.
        """
        if picture.ndim != 3 or picture.shape[2] != 3:
            raise ValueError(f"picture must be (H, W, 3) RGB, got shape {picture.shape}")
        candidates = self._search(picture, self.detect_sides)
        if len(candidates) == 0:
            return []
        kept = non_maximum_suppression(
            candidates[:, :4], candidates[:, 14], iou_threshold=self.nms_threshold, top_k=self.top_k
        )
        faces = []
        for row in candidates[kept]:
            faces.append(
                Face(
                    box=(float(row[0]), float(row[1]), float(row[2]), float(row[3])),
                    landmarks=row[4:14].reshape(5, 2).astype(np.float32),
                    score=float(row[14]),
                )
            )
        return [self.refine(picture, face) for face in faces] if self.refine_contexts else faces


@cache
def default_detector() -> YuNetDetector:
    """One shared detector with default settings (the session is built once per process)."""
    return YuNetDetector()
