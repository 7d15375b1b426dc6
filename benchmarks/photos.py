"""Real-photo benchmark: the same face written the ways phones and photo libraries write it.

    .venv/bin/python benchmarks/photos.py --out benchmarks/results/photos.json

For ``--faces`` private ORL faces (identities s21-s40, picture 1, never seen by the
kit), writes each face as a plain PNG and as the variants below into a temporary
folder, runs the SDK's folder pipeline on it (decode -> detect -> align -> encoder,
exactly what ``edge-sdk encode`` runs), and compares every variant with the plain
picture of the same face:

* relative feature distance ``||f(variant) - f(plain)|| / ||f(plain)||``;
* whether the kit head's answer agrees;
* files skipped (none of them should be: every variant is readable).

Variants: framed (the face at 1.0-1.4x in a 320x240 frame on a random textured
background), EXIF orientation 6 JPEG, 16-bit PNG, RGBA with a transparent border,
lossy WebP, BMP, TIFF, upper-case ``.PNG`` suffix, CMYK JPEG, palette PNG, GIF,
MPO. Also counts the faces the detector finds in all 400 ORL pictures and times
decode + detect + align per picture on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from edge_sdk.data.folder import load_folder
from edge_sdk.data.images import load_faces, read_picture
from edge_sdk.data.orl import orl_root
from edge_sdk.faces.detector import default_detector
from edge_sdk.kit import Kit, load_kit

Writer = Callable[[Image.Image, Path, np.random.Generator], Path]


def _textured_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Smooth coloured noise plus stripes: a wall, curtains, a shelf, not a flat studio backdrop."""
    width, height = size
    coarse = rng.uniform(40, 220, (height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width]
    stripes = 25 * np.sin(2 * np.pi * (x * rng.uniform(0.02, 0.08) + y * rng.uniform(0.0, 0.05)))[..., None]
    noise = rng.normal(0, 8, base.shape)
    return Image.fromarray(np.clip(base + stripes + noise, 0, 255).astype(np.uint8))


def framed(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    scale = rng.uniform(1.0, 1.4)
    size = (round(face.width * scale), round(face.height * scale))
    frame = _textured_background(rng, (320, 240))
    left, top = int(rng.integers(0, 320 - size[0])), int(rng.integers(0, 240 - size[1]))
    frame.paste(face.convert("RGB").resize(size, Image.Resampling.BICUBIC), (left, top))
    frame.save(path.with_suffix(".jpg"), "JPEG", quality=92)
    return path.with_suffix(".jpg")


def exif_rotated(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, "rotate 90 clockwise to display"
    face.transpose(Image.Transpose.ROTATE_90).save(path.with_suffix(".jpg"), "JPEG", quality=92, exif=exif.tobytes())
    return path.with_suffix(".jpg")


def sixteen_bit(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    Image.fromarray(np.asarray(face, np.uint16) * 257).save(path.with_suffix(".png"), "PNG")
    return path.with_suffix(".png")


def transparent_border(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    canvas = Image.new("RGBA", (face.width + 60, face.height + 40), (0, 0, 0, 0))
    canvas.paste(face.convert("RGBA"), (30, 20))
    canvas.save(path.with_suffix(".png"), "PNG")
    return path.with_suffix(".png")


def _plainly(fmt: str, suffix: str, mode: str = "L", **options: object) -> Writer:
    def write(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
        face.convert(mode).save(path.with_suffix(suffix), fmt, **options)
        return path.with_suffix(suffix)

    return write


def mpo(face: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    second = Image.new("RGB", face.size, (255, 255, 255))
    face.convert("RGB").save(path.with_suffix(".mpo"), "MPO", save_all=True, append_images=[second], quality=92)
    return path.with_suffix(".mpo")


VARIANTS: dict[str, Writer] = {
    "framed 1.0-1.4x, textured": framed,
    "EXIF orientation 6 JPEG": exif_rotated,
    "16-bit PNG": sixteen_bit,
    "RGBA, transparent border": transparent_border,
    "WebP (lossy, q=90)": _plainly("WEBP", ".webp", "RGB", quality=90),
    "BMP": _plainly("BMP", ".bmp"),
    "TIFF": _plainly("TIFF", ".tif"),
    "upper-case .PNG": _plainly("PNG", ".PNG"),
    "CMYK JPEG": _plainly("JPEG", ".jpg", "CMYK", quality=92),
    "palette PNG": _plainly("PNG", ".png", "P"),
    "GIF": _plainly("GIF", ".gif"),
    "MPO (first frame)": mpo,
}


def _encode(kit: Kit, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if kit.head is None:
        raise SystemExit("the kit has no head; the benchmark compares the head's answers")
    with torch.no_grad():
        features = kit.encoder(images)
        return features.flatten(1), kit.head(features).argmax(1)


def compare_variants(kit: Kit, faces: int, seed: int, threshold: float) -> dict[str, dict[str, Any]]:
    """Per-variant distances and agreements against the plain picture."""
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[Any]]] = {name: {"distance": [], "agree": [], "skipped": []} for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names: dict[str, tuple[int, str]] = {}
        for subject in range(21, 21 + faces):
            with Image.open(orl_root() / f"s{subject}" / "1.pgm") as source:
                face = source.convert("L")
            face.save(folder / f"s{subject}_plain.png")
            for index, (name, write) in enumerate(VARIANTS.items()):
                written = write(face, folder / f"s{subject}_variant{index:02d}", rng)
                names[written.name] = (subject, name)
        loaded = load_folder(folder, kit.spec)
        features, answers = _encode(kit, loaded.images)
        by_file = {file: i for i, file in enumerate(loaded.files)}
        for skipped in loaded.skipped:
            subject, name = names.get(skipped.file, (0, "plain"))
            if name != "plain":
                rows[name]["skipped"].append(f"{skipped.file}: {skipped.reason}")
        for file, (subject, name) in names.items():
            plain = by_file.get(f"s{subject}_plain.png")
            if file not in by_file or plain is None:
                continue  # unread variants are listed as skipped; no plain picture: nothing to compare with
            index = by_file[file]
            distance = float((features[index] - features[plain]).norm() / features[plain].norm())
            rows[name]["distance"].append(distance)
            rows[name]["agree"].append(bool(answers[index] == answers[plain]))
    table: dict[str, dict[str, Any]] = {}
    for name, found in rows.items():
        distances = np.asarray(found["distance"])
        table[name] = {
            "files": faces,
            "read": len(distances),
            "skipped": found["skipped"],
            "median_distance": float(np.median(distances)) if len(distances) else float("nan"),
            "max_distance": float(distances.max()) if len(distances) else float("nan"),
            "within_threshold": int((distances <= threshold).sum()),
            "head_agrees": int(sum(found["agree"])),
        }
    return table


def orl_detection_and_timing(kit: Kit) -> dict[str, Any]:
    """Faces found in each of the 400 ORL pictures, and milliseconds per picture."""
    detector = default_detector()
    root = orl_root()
    counts: list[int] = []
    decode_ms: list[float] = []
    detect_ms: list[float] = []
    total_ms: list[float] = []
    for subject in range(1, 41):
        for image in range(1, 11):
            path = root / f"s{subject}" / f"{image}.pgm"
            start = time.perf_counter()
            picture = read_picture(path)
            decoded = time.perf_counter()
            counts.append(len(detector.detect(picture)))
            detected = time.perf_counter()
            load_faces(path, kit.spec)
            total = time.perf_counter()
            decode_ms.append(1000 * (decoded - start))
            detect_ms.append(1000 * (detected - decoded))
            total_ms.append(1000 * (total - detected))
    return {
        "pictures": len(counts),
        "exactly_one_face": sum(c == 1 for c in counts),
        "no_face": sum(c == 0 for c in counts),
        "median_ms": {
            "decode": statistics.median(decode_ms),
            "detect": statistics.median(detect_ms),
            "decode_detect_align": statistics.median(total_ms),
        },
        "p95_ms_decode_detect_align": float(np.quantile(total_ms, 0.95)),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/photos.json"))
    parser.add_argument("--faces", type=int, default=20, help="Private identities used (s21 on), at most 20.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threshold", type=float, default=0.35, help="Relative feature distance counted as read right."
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kit = load_kit()
    table = compare_variants(kit, min(args.faces, 20), args.seed, args.threshold)
    orl = orl_detection_and_timing(kit)
    files = sum(row["files"] for row in table.values())
    within = sum(row["within_threshold"] for row in table.values())
    agree = sum(row["head_agrees"] for row in table.values())
    skipped = sum(len(row["skipped"]) for row in table.values())
    print(
        f"{'variant':28s} {'read':>6s} {'median d':>9s} {'max d':>7s} {'d<=' + str(args.threshold):>8s} {'agree':>6s}"
    )
    for name, row in table.items():
        read = f"{row['read']}/{row['files']}"
        numbers = f"{row['median_distance']:>9.3f} {row['max_distance']:>7.3f} {row['within_threshold']:>8d}"
        print(f"{name:28s} {read:>6s} {numbers} {row['head_agrees']:>6d}")
    print(
        f"all variants: {within}/{files} within {args.threshold} ({within / files:.1%}), head agrees {agree}/{files} "
        f"({agree / files:.1%}), skipped {skipped}"
    )
    print(
        f"ORL: {orl['exactly_one_face']}/{orl['pictures']} pictures with exactly one face; median ms per picture "
        f"{orl['median_ms']} on {args.threads} threads"
    )
    result = {
        "command": "python benchmarks/photos.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "date": time.strftime("%Y-%m-%d"),
        "commit": _git_commit(),
        "kit": kit.manifest.name,
        "threshold": args.threshold,
        "variants": table,
        "summary": {"files": files, "within_threshold": within, "head_agrees": agree, "skipped": skipped},
        "orl_detection": orl,
        "threads": args.threads,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
