"""The crafting pipeline every method shares: :class:`Crafter` and its result.

For a batch of images (or raw features ``F0 = Enc(X)``) a :class:`Crafter` answers
repeats from its repeat cache, puts the new items in a canonical order (by content, so
a set of faces gets the same release whatever order it comes in), shuffles them with a
generator seeded by the configuration seed and the batch content, inverts ``F0`` as the
attacker would, draws the public prior faces, builds the privacy loss
(:mod:`~edge_sdk.crafting.losses`) and the utility loss, and hands the batch to the
configured method (:mod:`~edge_sdk.crafting.methods`: the paper's Alg. 1 in feature
space, or Crafter-z, the default). It then measures the release (distortion,
epsilon-PII) and returns it in the caller's order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edge_sdk.crafting.cache import RepeatCache
from edge_sdk.crafting.config import PRESETS, CrafterConfig
from edge_sdk.crafting.losses import (
    CriticEMD,
    ExactEMD,
    FeatureDistance,
    HeadKL,
    IntrapersonalDistance,
    PrivacyLoss,
    UtilityLoss,
)
from edge_sdk.crafting.methods import METHODS, CraftingOutcome, CraftingProblem
from edge_sdk.crafting.pii import epsilon_pii
from edge_sdk.data.images import to_unit_range
from edge_sdk.devices import resolve_device
from edge_sdk.errors import KitError
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.models import Critic
from edge_sdk.metrics import relative_distortion
from edge_sdk.runtime import EncoderRuntime, TorchEncoder
from edge_sdk.validation import check_batch

__all__ = ["PRESETS", "CraftResult", "Crafter", "CrafterConfig", "craft"]


@dataclass
class CraftResult:
    """Crafted features and what crafting did.

    Attributes:
        features: Crafted features in the caller's order, shape of the input features.
        raw_features: The encoder's features ``F0`` (kept on the device; never upload them).
        diagnostics: Per-batch figures: ``utility_loss`` (mean ``||F - F0||``),
            ``relative_distortion`` (mean ``||F - F0|| / ||F0||``), ``critic_estimate``
            (the critic's Wasserstein estimate between reconstructions and prior at the
            last step), ``epsilon_pii`` and ``epsilon_pii_raw`` (for the raw features;
            ``None`` when the crafter does not measure privacy),
            ``cache_hits``, ``crafted``, ``seconds``, ``step_seconds`` (mean time of
            one feature step), and per-step curves.
    """

    features: torch.Tensor
    raw_features: torch.Tensor
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _content_digests(raw: torch.Tensor) -> list[bytes]:
    """SHA-256 of each raw feature: fixes the canonical order and the random draws.

    Only used inside a call (never stored), unlike the cache's keyed digests.
    """
    array = raw.detach().cpu().contiguous().float().numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in array]


def _batch_seed(seed: int, digests: list[bytes]) -> int:
    """A seed fixed by the config seed and the *set* of items (not their order)."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True))
    for item in sorted(digests):
        digest.update(item)
    return int.from_bytes(digest.digest()[:7], "little")


def _normalise_prior(prior: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Match the prior faces' pixel mean and std to the private batch's (paper Sec. IV-D)."""
    scaled = (prior - prior.mean()) / prior.std().clamp_min(1e-6) * reference.std() + reference.mean()
    return scaled.clamp(-1.0, 1.0)


class Crafter:
    """Crafts features for a kit.

    Args:
        kit: The kit whose encoder, generator and amortizer simulate the attacker.
        config: Crafting settings.
        cache: Repeat cache; a fresh in-memory one if omitted. Pass a persisted
            :class:`RepeatCache` to keep releases stable across restarts.
        encoder: Runtime that encodes images (e.g. an exported encoder under
            onnxruntime); the kit's torch encoder if omitted. Crafting itself always
            runs in torch, starting from these features.
        progress: Optional callback ``progress(step, total)`` after each crafting step.
        measure_privacy: Measure each batch's epsilon-PII before and after crafting
            (two attacker inversions per batch, in the diagnostics). Off, the release is
            the same; the inversion of the release is skipped, and so is that of the raw
            features when the method does not start from it (answer-only, Crafter-z with
            ``latent_noise=1``) and images are given (the amortizer's guess stands in).
        device: Where crafting runs: ``"cpu"`` (the default) or ``"cuda[:N]"``. The
            kit's networks are copied there; encoding stays on the CPU (its bytes seed
            the batch and key the repeat cache) and releases come back on the CPU.
            Random draws are the CPU's seeded ones on every device, but a GPU's
            arithmetic (TF32 convolutions, other summation orders) makes another
            release from the same draws, as another machine would.

    Raises:
        KitError: ``utility="head"`` with a kit without a head, or ``"intrapersonal"``
            with a kit without a fitted intrapersonal subspace.
        DeviceUnavailableError: ``device`` is not available here.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> from edge_sdk.data.orl import load_orl
        >>> crafter = Crafter(load_kit(), CrafterConfig(steps=2, inversion_steps=5, final_inversion_steps=5))
        >>> result = crafter.craft(images=load_orl("private-test").images[:4])
        >>> result.features.shape, result.diagnostics["crafted"]
        (torch.Size([4, 32, 16, 16]), 4)
    """

    def __init__(
        self,
        kit: Kit,
        config: CrafterConfig | None = None,
        *,
        cache: RepeatCache | None = None,
        encoder: EncoderRuntime | None = None,
        progress: Callable[[int, int], None] | None = None,
        measure_privacy: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.kit = kit.to(self.device)
        # Encoding stays on the CPU: the raw features' bytes fix the batch's seed and the
        # repeat cache's keys, which must not depend on a GPU's arithmetic (TF32, algorithms per shape).
        self.encoder = encoder or TorchEncoder(kit)
        self.config = config or CrafterConfig()
        if self.config.utility == "intrapersonal" and self.config.head_weight > 0 and kit.head is None:
            raise KitError(
                f"kit {kit.manifest.name!r} has no head, whose answers head_weight={self.config.head_weight:g} keeps; "
                "craft with head_weight=0 or a kit with a head"
            )
        if self.config.utility == "head" and kit.head is None:
            raise KitError(
                f"kit {kit.manifest.name!r} has no head, which utility='head' (the default) keeps the answers of; "
                "craft with CrafterConfig.feature() or a kit with a head"
            )
        if self.config.utility == "intrapersonal" and (kit.intrapersonal is None or not kit.intrapersonal.fitted):
            raise KitError(
                f"kit {kit.manifest.name!r} has no intrapersonal subspace, which utility='intrapersonal' keeps the "
                "coordinates in; add it with edge_sdk.kit.training.fit_intrapersonal(kit, public_faces) and save_kit, "
                "or craft with another utility"
            )
        rank = self.config.intrapersonal_rank
        if rank is not None and kit.intrapersonal is not None and rank > kit.intrapersonal.rank:
            raise KitError(
                f"intrapersonal_rank={rank} asks for more directions than kit {kit.manifest.name!r} has "
                f"({kit.intrapersonal.rank})"
            )
        self.cache = cache if cache is not None else RepeatCache(scope=self.scope)
        self.progress = progress
        self.measure_privacy = measure_privacy
        self.method = METHODS[self.config.method](self.kit, self.config)
        for module in (*kit.components().values(), *self.kit.components().values()):
            module.eval()

    @property
    def scope(self) -> str:
        """Identifies kit and configuration, for persisted caches."""
        weights = ",".join(f"{k}:{v.sha256[:16]}" for k, v in sorted(self.kit.manifest.files.items()))
        return f"{self.kit.manifest.name}|{weights}|{sorted(asdict(self.config).items())}"

    def craft(self, *, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> CraftResult:
        """Craft a batch, given either preprocessed images or raw encoder features.

        Items seen before (by this crafter's cache) get the feature released then;
        only new items are crafted, together, as one shuffled batch.

        Raises:
            TensorShapeError: Wrong shape or dtype, or both or neither input given.
            NonFiniteError: NaN or infinite values.
        """
        from edge_sdk.errors import TensorShapeError

        if (images is None) == (features is None):
            raise TensorShapeError("pass exactly one of images= or features=")
        start = time.perf_counter()
        if images is not None:
            images = check_batch(images, self.kit.architecture.image_shape, name="images")
            raw = self.encoder.encode(images)
        else:
            raw = check_batch(features, self.kit.feature_shape, name="features")
        raw = raw.to(self.device)
        images = images.to(self.device) if images is not None else None
        keys = self.cache.keys_for(raw)
        out = torch.empty_like(raw, device="cpu")
        todo: dict[str, list[int]] = {}
        hits = 0
        for i, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                out[i] = cached
                hits += 1
            else:
                todo.setdefault(key, []).append(i)
        diagnostics: dict[str, Any] = {"batch": len(keys), "cache_hits": hits, "crafted": len(todo)}
        if todo:
            # Canonical order (by content digest): what a set of faces gets does not
            # depend on the order the caller sent them in; shuffling happens inside.
            digests = _content_digests(raw[[rows[0] for rows in todo.values()]])
            new_keys = [key for _, key in sorted(zip(digests, todo, strict=True))]
            first = [todo[key][0] for key in new_keys]
            pixels = images[first] if images is not None else None
            crafted, batch_diag = self._craft_new(raw[first], pixels, sorted(digests))
            crafted = crafted.cpu()
            for j, key in enumerate(new_keys):
                out[todo[key]] = crafted[j]
            self.cache.put(new_keys, crafted)
            diagnostics.update(batch_diag)
        diagnostics["seconds"] = round(time.perf_counter() - start, 3)
        return CraftResult(features=out, raw_features=raw.cpu(), diagnostics=diagnostics)

    def _craft_new(
        self, raw: torch.Tensor, images: torch.Tensor | None, digests: list[bytes]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Craft new items (canonical order) as one shuffled batch; release in the same order."""
        cfg = self.config
        gen = torch.Generator().manual_seed(_batch_seed(cfg.seed, digests))
        order = torch.randperm(raw.shape[0], generator=gen) if cfg.shuffle else torch.arange(raw.shape[0])
        raw = raw[order]
        method = self.method
        # Without the measurement, a method that ignores the attacker's start needs only the amortizer's guess.
        inverted = self.measure_privacy or images is None or method.reads_attacker_start
        z_raw = method.invert(raw, None, cfg.inversion_steps if inverted else 0)
        with torch.no_grad():
            recon_raw = self.kit.generator(z_raw)
            prior = self._prior_faces(gen, images[order] if images is not None else recon_raw)
        privacy = self._privacy_loss(prior, gen)
        problem = CraftingProblem(
            raw=raw, z_raw=z_raw, privacy=privacy, utility=self._utility_loss(raw), rng=gen, progress=self.progress
        )
        outcome = method.craft(problem, final_inversion=self.measure_privacy)
        diagnostics = self._diagnostics(outcome, raw, recon_raw, prior, privacy)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return outcome.crafted[inverse], diagnostics

    def _prior_faces(self, gen: torch.Generator, reference: torch.Tensor) -> torch.Tensor:
        """Public prior faces ``G(z_r)``, their pixel statistics matched to the batch's."""
        z_r = torch.randn(self.config.prior_samples, self.kit.architecture.latent_dim, generator=gen).to(self.device)
        return _normalise_prior(self.kit.generator(z_r), reference)

    def _privacy_loss(self, prior: torch.Tensor, gen: torch.Generator) -> PrivacyLoss:
        cfg = self.config
        # The critic (and its seed, drawn from ``gen``) is made for either loss, so the
        # batch's random stream does not depend on which privacy loss is chosen.
        critic = self._new_critic(gen)
        if cfg.privacy_loss == "emd":
            return ExactEMD(prior)
        return CriticEMD(prior, critic, steps=cfg.critic_steps, lr=cfg.critic_lr, gp_weight=cfg.gp_weight, rng=gen)

    def _utility_loss(self, raw: torch.Tensor) -> UtilityLoss:
        if self.config.utility == "feature":
            return FeatureDistance(raw)
        if self.config.utility == "intrapersonal":
            assert self.kit.intrapersonal is not None  # checked in __init__
            return IntrapersonalDistance(
                self.kit.intrapersonal,
                raw,
                head=self.kit.head,
                head_weight=self.config.head_weight,
                head_loss=self.config.head_loss,
                head_margin=self.config.head_margin,
                rank=self.config.intrapersonal_rank,
            )
        assert self.kit.head is not None  # checked in __init__
        return HeadKL(self.kit.head, raw)

    def _diagnostics(
        self,
        outcome: CraftingOutcome,
        raw: torch.Tensor,
        recon_raw: torch.Tensor,
        prior: torch.Tensor,
        privacy: PrivacyLoss,
    ) -> dict[str, Any]:
        spec = self.kit.spec
        pii: dict[str, float | None] = {"epsilon_pii": None, "epsilon_pii_raw": None}
        if outcome.z_final is not None:
            prior_px = to_unit_range(prior, spec)
            with torch.no_grad():
                recon_final = self.kit.generator(outcome.z_final)
            pii = {
                "epsilon_pii": epsilon_pii(to_unit_range(recon_final, spec), prior_px),
                "epsilon_pii_raw": epsilon_pii(to_unit_range(recon_raw, spec), prior_px),
            }
        critic_curve = privacy.curve if isinstance(privacy, CriticEMD) else []
        return {
            "method": self.config.method,
            "step_seconds": outcome.loop_seconds / max(self.config.steps, 1),
            "utility_loss": (outcome.crafted - raw).flatten(1).norm(dim=1).mean().item(),
            "relative_distortion": relative_distortion(outcome.crafted, raw).mean().item(),
            "critic_estimate": critic_curve[-1] if critic_curve else None,
            **pii,
            "curves": {
                "critic_estimate": critic_curve,
                "emd": privacy.curve if isinstance(privacy, ExactEMD) else [],
                "utility_loss": outcome.utility_curve,
            },
        }

    def _new_critic(self, gen: torch.Generator) -> nn.Module:
        critic = Critic(self.kit.architecture)
        if self.config.critic_init == "kit" and self.kit.critic is not None:
            critic.load_state_dict(self.kit.critic.state_dict())
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)  # the CPU's alone: a GPU's generators stay the caller's
                critic = Critic(self.kit.architecture)
        return critic.to(self.device).train()


def craft(
    kit: Kit,
    *,
    images: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    config: CrafterConfig | None = None,
) -> CraftResult:
    """One-shot crafting with a fresh crafter (no memory of earlier batches)."""
    return Crafter(kit, config).craft(images=images, features=features)
