"""Record where the SDK's face detector finds the five landmarks of each of the 400 ORL faces.

Run by a maintainer whenever the detector or its settings change; the result is committed
as ``edge_sdk/data/orl_landmarks.csv``::

    .venv/bin/python scripts/compute_orl_landmarks.py

Each picture is decoded with :func:`edge_sdk.data.images.read_picture` and searched with
:func:`edge_sdk.faces.detector.default_detector`, exactly as ``edge-sdk craft`` does; the
largest face's landmarks are written with every digit of their float32 values, so
:func:`edge_sdk.data.orl.load_orl` aligns the faces bit for bit as the detection path
would on the machine that ran this, without searching each face again (about 0.1 s per
face on 2 cores, paid once per process). ``tests/test_data_orl.py`` detects a sample
of faces again and checks the file still matches the detector.
"""

from __future__ import annotations

import csv

from tqdm import tqdm

from edge_sdk.data.images import read_picture
from edge_sdk.data.orl import LANDMARK_COLUMNS, LANDMARKS_CSV, orl_keys, orl_root
from edge_sdk.faces.detector import default_detector


def main() -> None:
    root, detector = orl_root(), default_detector()
    rows = []
    for subject, image in tqdm(orl_keys("all"), desc="detecting ORL faces"):
        faces = detector.detect(read_picture(root / f"s{subject}" / f"{image}.pgm"))
        if not faces:
            raise SystemExit(f"no face found in s{subject}/{image}.pgm")
        largest = max(faces, key=lambda face: face.area)
        rows.append([subject, image, *(repr(float(v)) for v in largest.landmarks.reshape(-1))])
    with LANDMARKS_CSV.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "image", *LANDMARK_COLUMNS])
        writer.writerows(rows)
    print(f"wrote {len(rows)} faces to {LANDMARKS_CSV}")


if __name__ == "__main__":
    main()
