"""Refresh ``constraints.txt``: resolve the package's ranges afresh, run the suite, pin what passed.

The package keeps version ranges in ``pyproject.toml``; ``constraints.txt`` pins the
versions the whole test suite last passed with, and the README and ``.ci/run``
install through it (``pip install -c constraints.txt ...``), so a fresh machine gets
what was tested. This script makes a new virtual environment in a temporary folder,
installs the project with every extra *without* the constraints (so pip picks the
newest versions the ranges allow; torch stays at the README's 2.13.0, the CPU wheel on
CPU-only Linux), writes the environment's ``pip freeze`` to ``constraints.txt`` with
the date, the Python version and the platform in its header, and runs the README's
test command there, which also checks the new pins against the ranges. If the suite
fails, the previous ``constraints.txt`` is put back.

Usage (from the repository root, 10-15 minutes on 2 cores)::

    python3 scripts/refresh_constraints.py            # resolve, test, write
    python3 scripts/refresh_constraints.py --no-tests # resolve and write without testing
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
# torch==2.13.0 first: on a CPU-only Linux machine that is the small CPU wheel (README).
INSTALL = ["torch==2.13.0", "-e", ".[dev]"]
PROJECT = "edge-feature-sdk"


def pinned_lines(freeze: str) -> list[str]:
    """``name==version`` lines of a ``pip freeze`` output, sorted, without the project itself.

    Local version labels (``2.13.0+cpu``) are dropped: a public pin matches every
    local build of that release (PEP 440), so the same file serves CPU and CUDA wheels.

    Example:
        >>> pinned_lines("Torch==2.13.0+cpu\\n-e /work/main\\nnumpy==2.4.6\\n")
        ['numpy==2.4.6', 'torch==2.13.0']
    """
    pins = []
    for line in freeze.splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^+\s]+)(\+\S+)?", line.strip())
        if match is None:
            continue  # editable installs, URLs, comments
        name = match.group(1).lower().replace("_", "-")
        if name != PROJECT:
            pins.append(f"{name}=={match.group(2)}")
    return sorted(pins)


def header(python: str) -> str:
    """Comment block naming when, with which interpreter and on which platform the pins passed."""
    today = datetime.date.today().isoformat()
    return (
        "# Versions the whole test suite last passed with (pip constraints file).\n"
        f"# Refreshed {today} on Python {python}, {platform.system()} {platform.machine()}, by\n"
        "#     python3 scripts/refresh_constraints.py\n"
        '# Install through it: pip install -c constraints.txt "torch==2.13.0" -e ".[dev]"\n'
        "# The package itself keeps the ranges of pyproject.toml.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-tests", action="store_true", help="write the pins without running the suite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="constraints-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", *INSTALL], cwd=ROOT, check=True)
        freeze = subprocess.run([python, "-m", "pip", "freeze"], cwd=ROOT, check=True, capture_output=True, text=True)
        probe = [python, "-c", "import platform; print(platform.python_version())"]
        version = subprocess.run(probe, check=True, capture_output=True, text=True).stdout.strip()
        previous = CONSTRAINTS.read_text() if CONSTRAINTS.exists() else None
        CONSTRAINTS.write_text(header(version) + "\n".join(pinned_lines(freeze.stdout)) + "\n")
        if not args.no_tests and subprocess.run([python, "-m", "pytest"], cwd=ROOT).returncode != 0:
            if previous is not None:
                CONSTRAINTS.write_text(previous)
            print("the suite failed with the fresh versions; constraints.txt put back as it was", file=sys.stderr)
            return 1
    print(f"wrote {CONSTRAINTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
