from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edge_sdk.data import ImageSpec, iter_folder_batches, list_images, load_folder, load_image, preprocess_image
from edge_sdk.errors import EmptyInputError, ImageLoadError


def _save(path: Path, size: tuple[int, int] = (92, 112), mode: str = "L", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


def test_preprocess_centre_crops_then_resizes() -> None:
    # A 40x20 picture: left half black, right half white; the centre square is 20x20
    # starting at x=10, so after the crop the left half of the result is black.
    array = np.zeros((20, 40), dtype=np.uint8)
    array[:, 20:] = 255
    x = preprocess_image(Image.fromarray(array), ImageSpec(size=16))
    assert x.shape == (1, 16, 16)
    assert torch.all(x[0, :, :7] == -1) and torch.all(x[0, :, 9:] == 1)


def test_rgb_jpg_and_pgm_are_converted_to_the_kit_shape(tmp_path: Path) -> None:
    spec = ImageSpec()
    for name, mode in (("a.jpg", "RGB"), ("b.png", "RGB"), ("c.pgm", "L")):
        x = load_image(_save(tmp_path / name, (300, 200), mode), spec)
        assert x.shape == (1, 64, 64) and x.dtype == torch.float32


def test_folder_with_bad_files_keeps_the_good_ones_and_lists_the_bad(tmp_path: Path) -> None:
    _save(tmp_path / "a.png")
    _save(tmp_path / "sub" / "b.pgm")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture")
    buffer = io.BytesIO()
    Image.new("L", (92, 112), 7).save(buffer, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[:60])
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    _save(tmp_path / ".hidden" / "c.png")

    result = load_folder(tmp_path, ImageSpec())
    assert result.files == ["a.png", "sub/b.pgm"]
    assert result.images.shape == (2, 1, 64, 64)
    reasons = {s.file: s.reason for s in result.skipped}
    assert set(reasons) == {"empty.png", "text.jpg", "truncated.png"}
    assert "empty" in reasons["empty.png"]
    assert "not a readable image" in reasons["text.jpg"]


def test_single_bad_file_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError, match=r"broken\.png"):
        load_image(bad, ImageSpec())
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.png", ImageSpec())


def test_empty_and_all_bad_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match="no pictures found"):
        load_folder(tmp_path, ImageSpec())
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(EmptyInputError, match="none of 1"):
        load_folder(tmp_path, ImageSpec())
    with pytest.raises(ImageLoadError, match="not a folder"):
        list_images(tmp_path / "x.png")


def test_batches_cover_the_folder_in_order(tmp_path: Path) -> None:
    for i in range(7):
        _save(tmp_path / f"{i}.png", value=i * 30)
    batches = list(iter_folder_batches(tmp_path, ImageSpec(size=16), batch_size=3))
    assert [len(b.files) for b in batches] == [3, 3, 1]
    assert [f for b in batches for f in b.files] == list_images(tmp_path)
    whole = load_folder(tmp_path, ImageSpec(size=16)).images
    assert torch.equal(torch.cat([b.images for b in batches]), whole)
