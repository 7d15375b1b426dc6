"""Every common way a picture is written decodes to the same pixels as the plain file."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from edge_sdk.data.folder import list_images, load_folder
from edge_sdk.data.images import ImageSpec, read_picture
from edge_sdk.data.orl import orl_root
from edge_sdk.errors import ImageLoadError
from edge_sdk.faces.alignment import ORL_TEMPLATE

ALIGNED = ImageSpec(face_template=ORL_TEMPLATE)


@pytest.fixture(scope="module")
def face() -> Image.Image:
    """A private ORL face (92x112, 8-bit grayscale)."""
    with Image.open(orl_root() / "s23" / "4.pgm") as image:
        return image.convert("L")


def _plain(face: Image.Image) -> np.ndarray:
    return np.repeat(np.asarray(face, np.float32)[:, :, None] / 255, 3, axis=2)


def _save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    image.save(path, fmt, **options)
    return path


def test_lossless_variants_decode_to_the_plain_pixels(face: Image.Image, tmp_path: Path) -> None:
    plain = _plain(face)
    rgb = face.convert("RGB")
    variants = {
        "upper.PNG": _save(face, tmp_path / "upper.PNG", "PNG"),
        "bitmap.bmp": _save(face, tmp_path / "bitmap.bmp", "BMP"),
        "scan.tif": _save(face, tmp_path / "scan.tif", "TIFF"),
        "lossless.webp": _save(rgb, tmp_path / "lossless.webp", "WEBP", lossless=True),
        "first-frame.gif": _save(face, tmp_path / "first-frame.gif", "GIF"),
        "colour.ppm": _save(rgb, tmp_path / "colour.ppm", "PPM"),
        "palette.png": _save(face.convert("P"), tmp_path / "palette.png", "PNG"),
        "tiff-named.png": _save(face, tmp_path / "tiff-named.png", "TIFF"),
    }
    for name, path in variants.items():
        np.testing.assert_allclose(read_picture(path), plain, atol=1e-6, err_msg=name)


def test_exif_orientation_is_applied(face: Image.Image, tmp_path: Path) -> None:
    sideways = face.transpose(Image.Transpose.ROTATE_90)  # how the sensor stored a portrait shot
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = _save(sideways, tmp_path / "portrait.png", "PNG", exif=exif.tobytes())
    np.testing.assert_allclose(read_picture(path), _plain(face), atol=1e-6)
    jpeg = _save(sideways, tmp_path / "portrait.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    assert np.abs(read_picture(jpeg) - _plain(face)).mean() < 0.01


def test_high_bit_depth_pictures_are_rescaled_not_clipped(face: Image.Image, tmp_path: Path) -> None:
    plain = _plain(face)
    sixteen = Image.fromarray(np.asarray(face, np.uint16) * 257)  # 8-bit value v -> 16-bit v * 257
    np.testing.assert_allclose(read_picture(_save(sixteen, tmp_path / "deep.png", "PNG")), plain, atol=1e-6)
    np.testing.assert_allclose(read_picture(_save(sixteen, tmp_path / "deep.tif", "TIFF")), plain, atol=1e-6)
    unit = Image.fromarray(np.asarray(face, np.float32) / 255)
    np.testing.assert_allclose(read_picture(_save(unit, tmp_path / "float.tif", "TIFF")), plain, atol=1e-6)


def test_transparent_border_is_cut_and_inner_transparency_goes_on_grey(face: Image.Image, tmp_path: Path) -> None:
    canvas = Image.new("RGBA", (140, 150), (0, 0, 0, 0))
    canvas.paste(face.convert("RGBA"), (20, 17))
    np.testing.assert_allclose(read_picture(_save(canvas, tmp_path / "cutout.png", "PNG")), _plain(face), atol=1e-6)
    half = face.convert("LA")
    half.putalpha(128)
    decoded = read_picture(_save(half, tmp_path / "half.png", "PNG"))
    np.testing.assert_allclose(decoded, _plain(face) * (128 / 255) + 0.5 * (1 - 128 / 255), atol=1e-6)


def test_cmyk_jpeg_and_lossy_webp_are_close(face: Image.Image, tmp_path: Path) -> None:
    for path in (
        _save(face.convert("CMYK"), tmp_path / "print.jpg", "JPEG", quality=95),
        _save(face.convert("RGB"), tmp_path / "phone.webp", "WEBP", quality=90),
    ):
        assert np.abs(read_picture(path) - _plain(face)).mean() < 0.02, path.name


def test_multi_picture_jpeg_gives_its_first_frame(face: Image.Image, tmp_path: Path) -> None:
    other = Image.new("RGB", face.size, (255, 255, 255))
    path = tmp_path / "stereo.mpo"
    face.convert("RGB").save(path, "MPO", save_all=True, append_images=[other], quality=95)
    with Image.open(path) as check:
        assert check.format == "MPO" and check.n_frames == 2
    assert np.abs(read_picture(path) - _plain(face)).mean() < 0.02


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    big = Image.new("RGB", (6000, 4000), (120, 130, 140))
    picture = read_picture(_save(big, tmp_path / "camera.jpg", "JPEG", quality=70))
    assert picture.shape == (2000, 3000, 3)  # 1/2 scale keeps the longer side >= 2048


def test_bad_pixels_and_unreadable_files_are_named(tmp_path: Path) -> None:
    nan = np.full((40, 40), np.nan, np.float32)
    with pytest.raises(ImageLoadError, match="NaN"):
        read_picture(_save(Image.fromarray(nan), tmp_path / "nan.tif", "TIFF"))
    with pytest.raises(ImageLoadError, match="transparent"):
        read_picture(_save(Image.new("RGBA", (30, 30)), tmp_path / "empty.png", "PNG"))
    (tmp_path / "random.heic").write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(ImageLoadError, match="not a readable image"):
        read_picture(tmp_path / "random.heic")


def test_eps_named_png_is_refused_without_running_ghostscript(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ghostscript must never run on an upload")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(subprocess, "check_call", forbidden)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    path = tmp_path / "innocent.png"
    path.write_bytes(eps)
    with pytest.raises(ImageLoadError, match="EPS pictures are not read"):
        read_picture(path)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "ICO")
    (tmp_path / "icon.png").write_bytes(buffer.getvalue())
    with pytest.raises(ImageLoadError, match="ICO pictures are not read"):
        read_picture(tmp_path / "icon.png")


def test_folder_lists_suffixes_case_insensitively_and_refuses_links_that_leave(
    face: Image.Image, tmp_path: Path
) -> None:
    inside = tmp_path / "photos"
    (inside / "Trip").mkdir(parents=True)
    outside = _save(face, tmp_path / "private.png", "PNG")
    _save(face, inside / "Trip" / "IMG_0001.JPG", "JPEG")
    _save(face, inside / "scan.TIFF", "TIFF")
    (inside / "notes.txt").write_text("not a picture")
    (inside / "escape.png").symlink_to(outside)
    (inside / "again.png").symlink_to(inside / "scan.TIFF")
    (inside / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    assert list_images(inside) == ["Trip/IMG_0001.JPG", "again.png", "escape.png", "scan.TIFF"]
    result = load_folder(inside, ALIGNED)
    assert result.files == ["Trip/IMG_0001.JPG", "again.png", "scan.TIFF"]
    assert [(s.file, s.reason) for s in result.skipped] == [
        ("escape.png", "symbolic link to a file outside the folder")
    ]


def test_picture_without_a_face_is_skipped_with_the_reason(face: Image.Image, tmp_path: Path) -> None:
    _save(face, tmp_path / "face.png", "PNG")
    _save(Image.new("L", (120, 90), 128), tmp_path / "wall.png", "PNG")
    result = load_folder(tmp_path, ALIGNED)
    assert result.files == ["face.png"]
    assert [(s.file, s.reason) for s in result.skipped] == [("wall.png", "no face found")]
    unaligned = load_folder(tmp_path, ImageSpec())
    assert unaligned.files == ["face.png", "wall.png"]
