"""The device's crafting and upload path stays lean: no cloud, evaluation or server code is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    "sqlalchemy",
    "matplotlib",
    "fastapi",
    "uvicorn",
    "ray",
    "cloud_stub",
    "edge_sdk.evaluation",
    "edge_sdk.cli",
    "edge_sdk.kit.training",
)


def test_importing_crafting_and_the_client_loads_no_cloud_or_evaluation_module() -> None:
    probe = "import sys, edge_sdk.crafting, edge_sdk.client; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    offending = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert offending == []
    assert "edge_sdk.crafting.methods" in loaded  # the probe did import the package


def test_the_device_command_line_loads_no_cloud_or_server_module() -> None:
    probe = "import sys, edge_sdk.cli; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    cloud = ("sqlalchemy", "fastapi", "uvicorn", "ray", "cloud_stub", "matplotlib", "onnx", "edge_sdk.evaluation")
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in cloud)] == []
    assert "edge_sdk.cli.craft" in loaded


def test_import_contracts_are_kept() -> None:
    """pyproject's [tool.importlinter] contracts, checked on every import in the source, not only at run time."""
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's console script (dev extra)
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
