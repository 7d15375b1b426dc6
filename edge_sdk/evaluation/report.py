"""Files of an evaluation: JSON, a Markdown report and PNG figures.

``report.json`` holds every number; ``report.md`` the tables a person reads (worst
case per defence, every attack, A3, the A1 curve); the figures show the
privacy-utility trade-off, the A1 curves and, per defence, the reconstructions of
each attack next to the original faces.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_sdk.data.images import ImageSpec, to_unit_range
from edge_sdk.evaluation.harness import EvaluationReport
from edge_sdk.figures import pyplot, save_figure, save_image_rows
from edge_sdk.fileio import atomic_write, write_json

__all__ = ["development_tables", "write_report"]

GRID_FACES = 10


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def _utility_axis(report: dict[str, Any]) -> tuple[str, Callable[[dict[str, Any]], float]]:
    """What the trade-off plot puts on x: retained unseen-task share when new heads were trained, else the kit head."""
    if report["development"]:
        return (
            "new heads: mean retained share of raw,\ntasks the kit never saw",
            lambda d: d["development"].get("mean_retained_unseen", float("nan")),
        )
    return ("kit-head pose accuracy on released features", lambda d: d["utility"]["pose_accuracy"])


def _plot_tradeoff(report: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    chance = report["faces"]["chance"]
    oracles = list(report["oracles_on_real_faces"])
    xlabel, utility = _utility_axis(report)
    fig, axes = plt.subplots(1, len(oracles), figsize=(5.5 * len(oracles), 4), squeeze=False)
    for ax, oracle in zip(axes[0], oracles, strict=True):
        name = oracle.removeprefix("identity_")
        for d in report["defences"]:
            ax.plot(
                utility(d), d["worst_case"][name]["identity"], "o" if d["kind"] != "raw" else "s", label=d["defence"]
            )
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.2f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"worst-case identity accuracy ({name})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return save_figure(fig, path)


def development_tables(scores: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the development scenario: balanced accuracy and retained share of new heads per task.

    Args:
        scores: ``EvaluationReport.development`` (one dict per release, task and head family).
    """
    if not scores:
        return []
    tasks = list(dict.fromkeys(s["task"] for s in scores))
    lines = [
        "",
        "## Development scenario: new heads trained on the releases",
        "",
        "Heads trained anew on the releases of some people and tested on those of others (identity-disjoint "
        "5-fold cross-validation over the 40 ORL people). Cells: balanced accuracy / retained share "
        "(released - chance) / (raw - chance), with its 95% interval over people. Tasks: "
        + ", ".join(f"{t}{' (the kit head' + chr(39) + 's task)' if _seen(scores, t) else ''}" for t in tasks)
        + ".",
    ]
    for family in dict.fromkeys(s["family"] for s in scores):
        rows = [s for s in scores if s["family"] == family]
        lines += [
            "",
            f"### {family} heads",
            "",
            "| release | " + " | ".join(tasks) + " |",
            "|---|" + "---|" * len(tasks),
        ]
        chance = {s["task"]: s["chance"] for s in rows}
        raw = {s["task"]: s["raw_accuracy"] for s in rows}
        lines.append("| chance | " + " | ".join(f"{chance[t]:.3f}" for t in tasks) + " |")
        lines.append("| raw features | " + " | ".join(f"{raw[t]:.3f}" for t in tasks) + " |")
        for release in dict.fromkeys(s["release"] for s in rows):
            cells = {s["task"]: s for s in rows if s["release"] == release}
            lines.append(
                f"| {release} | "
                + " | ".join(
                    f"{c['accuracy']:.3f} / {c['retained']:.2f} [{c['retained_ci'][0]:.2f}, {c['retained_ci'][1]:.2f}]"
                    for c in (cells[t] for t in tasks)
                )
                + " |"
            )
    return lines


def _seen(scores: list[dict[str, Any]], task: str) -> bool:
    return any(s["seen_by_kit"] for s in scores if s["task"] == task)


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
        + " | retained, unseen tasks (mean / min) | kit-head pose acc | raw | agreement | distortion | s/image |",
        "|---|" + "---|" * (len(oracles) + 6),
    ]
    for d in report["defences"]:
        u, dev = d["utility"], d["development"]
        worst = " | ".join(f"{d['worst_case'][o]['identity']:.3f} ({d['worst_case'][o]['attack']})" for o in oracles)
        retained = f"{dev['mean_retained_unseen']:.2f} / {dev['min_retained_unseen']:.2f}" if dev else "not measured"
        utility = " | ".join(
            f"{u[k]:.3f}" for k in ("pose_accuracy", "pose_accuracy_raw", "pose_agreement", "relative_distortion")
        )
        lines.append(f"| {d['defence']} | {worst} | {retained} | {utility} | {_fmt(d['seconds_per_image'])} |")
    lines += ["", f"![trade-off]({figures['tradeoff']})"]
    lines += development_tables(report["development"])
    lines += ["", "## Every attack", ""]
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
