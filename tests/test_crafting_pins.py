"""Seeded releases pinned bit for bit, so a refactoring of the crafting code cannot change what users release.

A release is seeded by the configuration *and the bytes of the raw features*, so the same
images give the same release only under the same floating-point behaviour. The pins are
therefore checked where the numerics match those they were recorded under (a fingerprint
of torch's kernels on a fixed computation, and the torch version) and skipped elsewhere,
saying why. ``python tests/test_crafting_pins.py --record`` rewrites them: only for a
change that is meant to change releases.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.data.orl import load_orl
from edge_sdk.kit import load_kit

PINS = Path(__file__).with_name("data") / "crafting_pins.json"
CONFIGS = {
    "default": CrafterConfig(steps=3, inversion_steps=5, final_inversion_steps=5),
    "default, latent noise 0": CrafterConfig(steps=3, inversion_steps=5, final_inversion_steps=5, latent_noise=0.0),
    "feature": CrafterConfig.feature(steps=3, inversion_steps=5, final_inversion_steps=5),
    "paper critic": CrafterConfig.paper(
        steps=2, inversion_steps=5, inner_steps=2, solver_iterations=5, critic_steps=2, final_inversion_steps=5
    ),
}


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def numerics_fingerprint() -> str:
    """torch's version and the bits of a fixed convolution, matrix product and softmax on one thread."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 8, 17, 17, generator=gen), torch.randn(16, 8, 3, 3, generator=gen)
    a, b = torch.randn(33, 65, generator=gen), torch.randn(65, 17, generator=gen)
    parts = (torch.nn.functional.conv2d(x, w), a @ b, torch.softmax(a, 1))
    return torch.__version__.split("+")[0] + ":" + _digest(torch.cat([p.flatten() for p in parts]))[:16]


def releases() -> dict[str, str]:
    """SHA-256 of each configuration's release of four private-test faces with the bundled kit."""
    kit, faces = load_kit(), load_orl("private-test").images[:4]
    return {name: _digest(Crafter(kit, config).craft(images=faces).features) for name, config in CONFIGS.items()}


def test_seeded_releases_are_the_pinned_ones() -> None:
    torch.set_num_threads(1)
    pins = json.loads(PINS.read_text())
    if pins["fingerprint"] != numerics_fingerprint():
        pytest.skip(f"other floating-point numerics than the pins were recorded under ({pins['fingerprint']})")
    assert releases() == pins["releases"]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    torch.set_num_threads(1)
    PINS.write_text(json.dumps({"fingerprint": numerics_fingerprint(), "releases": releases()}, indent=1) + "\n")
    print(f"wrote {PINS}")
