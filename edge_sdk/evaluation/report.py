"""Files of an evaluation: JSON, a Markdown report and PNG figures.

``report.json`` holds every number; ``report.md`` the tables a person reads (worst
case per defence, every attack, A3, the A1 curve); the figures show the
privacy-utility trade-off, the A1 curves and, per defence, the reconstructions of
each attack next to the original faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sdk.data.images import ImageSpec, to_unit_range
from edge_sdk.evaluation.harness import EvaluationReport
from edge_sdk.figures import pyplot, save_figure, save_image_rows
from edge_sdk.fileio import atomic_write, write_json

__all__ = ["write_report"]

GRID_FACES = 10


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def _plot_tradeoff(report: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    chance = report["faces"]["chance"]
    oracles = list(report["oracles_on_real_faces"])
    fig, axes = plt.subplots(1, len(oracles), figsize=(5 * len(oracles), 4), squeeze=False)
    for ax, oracle in zip(axes[0], oracles, strict=True):
        name = oracle.removeprefix("identity_")
        crafter = sorted((d for d in report["defences"] if d["kind"] == "crafter"), key=lambda d: d["beta"])
        if crafter:
            ax.plot(
                [d["utility"]["pose_accuracy"] for d in crafter],
                [d["worst_case"][name]["identity"] for d in crafter],
                "o-",
                label="Crafter (beta)",
            )
            for d in crafter:
                ax.annotate(
                    f"{d['beta']:g}",
                    (d["utility"]["pose_accuracy"], d["worst_case"][name]["identity"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for d in report["defences"]:
            if d["kind"] != "crafter":
                ax.plot(d["utility"]["pose_accuracy"], d["worst_case"][name]["identity"], "s", label=d["defence"])
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.2f}")
        ax.set_xlabel("pose-head accuracy on released features")
        ax.set_ylabel(f"worst-case identity accuracy ({name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plot_a1(report: dict[str, Any], path: Path) -> Path | None:
    curves = [d for d in report["defences"] if d["a1_curve"]]
    if not curves:
        return None
    plt = pyplot()
    oracles = [k.removeprefix("identity_") for k in report["oracles_on_real_faces"]]
    fig, axes = plt.subplots(1, len(oracles), figsize=(5 * len(oracles), 3.5), squeeze=False)
    for ax, oracle in zip(axes[0], oracles, strict=True):
        for d in curves:
            ax.plot(
                [p["steps"] for p in d["a1_curve"]],
                [p[f"identity_{oracle}"] for p in d["a1_curve"]],
                "o-",
                label=d["defence"],
            )
        ax.set_xlabel("A1 decoder training steps on crafted public faces")
        ax.set_ylabel(f"identity accuracy ({oracle})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _markdown(report: dict[str, Any], figures: dict[str, str]) -> str:
    oracles = [k.removeprefix("identity_") for k in report["oracles_on_real_faces"]]
    faces = report["faces"]
    lines = [
        f"# Evaluation of kit `{report['kit']}`",
        "",
        f"{faces['attacked']} {faces['split']} faces of {faces['people']} people; chance identity accuracy "
        f"{faces['chance']:.3f}. Oracles on the real faces: "
        + ", ".join(f"{k.removeprefix('identity_')} {v:.3f}" for k, v in report["oracles_on_real_faces"].items())
        + f". Total time {report['seconds']:.0f} s.",
        "",
        "## Worst case over all attacks",
        "",
        "| defence | "
        + " | ".join(f"worst identity ({o})" for o in oracles)
        + " | pose acc | raw pose acc | agreement | distortion | s/image |",
        "|---|" + "---|" * (len(oracles) + 5),
    ]
    for d in report["defences"]:
        u = d["utility"]
        worst = " | ".join(f"{d['worst_case'][o]['identity']:.3f} ({d['worst_case'][o]['attack']})" for o in oracles)
        utility = " | ".join(
            f"{u[k]:.3f}" for k in ("pose_accuracy", "pose_accuracy_raw", "pose_agreement", "relative_distortion")
        )
        lines.append(f"| {d['defence']} | {worst} | {utility} | {_fmt(d['seconds_per_image'])} |")
    lines += ["", f"![trade-off]({figures['tradeoff']})", "", "## Every attack", ""]
    columns = [f"identity_{o}" for o in oracles] + ["fsim", "ssim", "psnr", "risk", "epsilon_pii", "seconds"]
    lines += [
        "| defence | attack | " + " | ".join(c.removeprefix("identity_") for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for d in report["defences"]:
        for row in d["attacks"]:
            lines.append(f"| {d['defence']} | {row['attack']} | " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    lines += ["", "## A3: averaging repeated releases", ""]
    lines += [
        "| mode | repeats | attack | spread of releases | " + " | ".join(oracles) + " | ssim |",
        "|---|---|---|---|" + "---|" * (len(oracles) + 1),
    ]
    for row in report["a3"]:
        identity = " | ".join(f"{row[f'identity_{o}']:.3f}" for o in oracles)
        lines.append(
            f"| {row['mode']} | {row['repeats']} | {row['attack']} | {row['release_spread']:.4f} | "
            f"{identity} | {row['ssim']:.3f} |"
        )
    if "a1" in figures:
        lines += ["", "## A1: adaptive decoder over training on crafted public faces", "", f"![A1]({figures['a1']})"]
    lines += ["", "## Reconstructions", ""]
    for name, file in figures.items():
        if name.startswith("grid:"):
            lines += [f"### {name.removeprefix('grid:')}", "", f"![{name}]({file})", ""]
    return "\n".join(lines) + "\n"


def write_report(report: EvaluationReport, out_dir: str | Path, *, spec: ImageSpec) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out_dir``.

    Args:
        report: What :func:`~edge_sdk.evaluation.harness.evaluate` returned.
        out_dir: Folder (created if missing).
        spec: The kit's image spec, to show reconstructions as pixels.

    Returns:
        The written files by role (``json``, ``markdown``, figure names).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    figures: dict[str, str] = {"tradeoff": _plot_tradeoff(data, out / "tradeoff.png").name}
    a1 = _plot_a1(data, out / "a1_curves.png")
    if a1 is not None:
        figures["a1"] = a1.name
    if report.originals is not None:  # reconstructions next to the faces they come from
        originals = to_unit_range(report.originals[:GRID_FACES], spec)
        for defence, images in report.reconstructions.items():
            rows = [("original", originals)] + [
                (attack[:18], to_unit_range(rebuilt[:GRID_FACES], spec)) for attack, rebuilt in images.items()
            ]
            path = save_image_rows(rows, out / f"reconstructions_{_slug(defence)}.png")
            figures[f"grid:{defence}"] = path.name
    paths = {"json": write_json(out / "report.json", data)}
    markdown = _markdown(data, figures)
    paths["markdown"] = atomic_write(out / "report.md", lambda p: p.write_text(markdown))
    paths.update({name: out / file for name, file in figures.items()})
    return paths
