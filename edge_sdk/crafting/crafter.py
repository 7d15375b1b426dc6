"""Crafter (paper Alg. 1): craft released features against a white-box inversion attacker.

For a batch with raw features ``F0 = Enc(X)``, find features ``F`` that minimise

    -E[D(G(z*(F)))] + beta * mean_i ||F_i - F0_i||,   z*(F) = argmin_z L_inv(F, z),

while a WGAN-GP critic ``D`` learns to tell the attacker's reconstructions ``G(z*(F))``
from public prior faces ``G(z_r)``. The gradient through ``z*(F)`` is implicit
(:mod:`edge_sdk.crafting.implicit`); the inversion starts from the amortizer and is
warm-started across feature steps.

The default configuration is Crafter-z (paper App. F) with head utility from a
fresh prior latent: it optimises ``z`` instead of ``F`` and releases ``Enc(G(z))``
with the kit head's answers kept, because on the default kit a decoder reads the
person through the small distortion of feature-space crafting, and through a
start at the attacker's inversion (see :class:`CrafterConfig`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from edge_sdk.crafting.cache import RepeatCache
from edge_sdk.crafting.implicit import implicit_feature_gradient
from edge_sdk.crafting.pii import epsilon_pii, image_cost, transport_plan
from edge_sdk.crafting.solvers import make_solver
from edge_sdk.data.images import to_unit_range
from edge_sdk.errors import KitError
from edge_sdk.inversion import inversion_loss, invert
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.models import Critic
from edge_sdk.kit.training import gradient_penalty
from edge_sdk.runtime import EncoderRuntime, TorchEncoder
from edge_sdk.validation import check_batch

__all__ = ["PRESETS", "CraftResult", "Crafter", "CrafterConfig", "craft"]

Solver = Literal["cg", "neumann", "dense"]


@dataclass(frozen=True)
class CrafterConfig:
    """Settings of one crafting call.

    The defaults release ``Enc(G(z))`` with ``z`` started at a fresh prior latent and
    pulled towards the public prior while the kit head's answers stay those of the
    raw feature (Crafter-z with head utility, 100 Adam steps of lr 0.05, ``beta = 1``,
    ``latent_noise = 1``). Measured on the default kit with every attack of the
    evaluation harness at full budget (``benchmarks/evaluation.py``, 80 private-test
    faces), they hold every attack, the adaptive and repeated-release ones
    included, to 8.75% identity accuracy with both the SFace and the classifier
    oracle, chance being 5%, with every pose answer kept; started at the attacker's
    inversion (``latent_noise = 0``) the same crafting left 12.5-16%, and the
    feature-space Crafter (:meth:`feature`) leaves 100% to a decoder.

    Attributes:
        method: ``"crafter-z"`` (the default) optimises the latent and releases
            ``Enc(G(z))`` (paper App. F): the release lies on the generator's range,
            so nothing off it is left for a decoder to read; ``"crafter"`` optimises
            the features themselves through the implicit gradient (paper Alg. 1,
            :meth:`feature`).
        beta: Weight of the utility loss (see ``utility``) against the privacy loss;
            larger keeps the release closer to what the raw feature gives.
        steps: Feature (``"crafter"``) or latent (``"crafter-z"``) updates.
        lr: Step size of the features: for ``"normalized"``, the first step's length
            as a fraction of ``||F0_i||`` (then cosine decay); for ``"adam"``, Adam's rate.
        feature_optimizer: ``"normalized"``: per-sample normalised gradient steps with
            momentum, which keep the implicit gradient's direction; ``"adam"``: the
            paper's Adam, whose per-coordinate scaling spends distortion on coordinates
            that barely matter (measured: 60-70% relative distortion for the same privacy).
        inversion_steps: Adam steps of the first inversion, from the amortizer's guess.
        inner_steps: Adam steps re-solving ``z*`` after each feature update (warm start).
        inner_lr: Adam learning rate of the inversion.
        latent_weight: Gaussian-prior weight of the inversion objective.
        solver: Inverse-Hessian-vector solver: ``"cg"``, ``"neumann"`` or ``"dense"``.
        solver_iterations: CG iterations or Neumann terms.
        neumann_alpha: Neumann step ``alpha`` (paper: 0.001).
        damping: Added to the Hessian's diagonal in the solve.
        warm_start_solver: Start each solve from the previous step's solution (CG).
        hessian: ``"gauss-newton"`` (PSD, no double backward) or ``"exact"``.
        privacy_loss: ``"critic"``: the paper's neural estimate of the EMD, a WGAN-GP
            critic trained against the prior as the features move; ``"emd"``: the
            exact EMD between the batch's reconstructions and the prior faces,
            solved by optimal transport at every step (no critic to train).
        critic_steps: Critic updates per feature update (``n_critic``).
        critic_lr: Adam learning rate of the critic (betas 0.5, 0.9).
        gp_weight: Gradient-penalty weight of the critic.
        critic_init: ``"fresh"`` (seeded new critic per call) or ``"kit"`` (start from
            the kit's WGAN critic).
        prior_samples: Number of public prior faces ``G(z_r)``.
        shuffle: Shuffle the batch before crafting (paper Sec. V-A).
        final_inversion_steps: Steps of the attacker's inversion measured for the
            diagnostics (epsilon-PII) after crafting.
        latent_lr: Adam learning rate of ``z`` for ``"crafter-z"`` (paper: 0.005).
        latent_noise: For ``"crafter-z"``, the share ``m`` of fresh prior noise in the
            starting latent, ``z0 = sqrt(1 - m^2) z*(F0) + m eps`` (a unit Gaussian
            again, ``eps`` seeded by the batch): 1 (the default) starts at a fresh
            prior face, so the release keeps of the person only what the utility loss
            asks for (with head utility: the head's answers); 0 starts at the
            attacker's inversion ``z*(F0)`` (paper App. F), which keeps more of the
            face for new heads and for a decoder. Measured on the default kit: 0.5
            lets heads trained anew on releases match raw features but a decoder
            reach 20% identity accuracy; 1 holds every attack to 8.75% and new
            heads lose 15 points (README, "Crafting").
        utility: What ``beta`` weighs: ``"head"`` (the default), the KL divergence
            from the kit head's class distribution on the raw features to that on the
            released ones (the head's answers are kept while the feature may move far
            from ``F0``; needs a kit with a head); ``"feature"``, the relative
            distortion ``||F_i - F0_i|| / ||F0_i||`` (task agnostic, but a decoder
            reads the person through a small distortion).
        seed: Seed; with the batch content it fixes every random draw.
    """

    method: Literal["crafter", "crafter-z"] = "crafter-z"
    beta: float = 1.0
    steps: int = 100
    lr: float = 0.05
    feature_optimizer: Literal["adam", "normalized"] = "normalized"
    inversion_steps: int = 30
    inner_steps: int = 3
    inner_lr: float = 0.05
    latent_weight: float = 0.0
    solver: Solver = "cg"
    solver_iterations: int = 4
    neumann_alpha: float = 1e-3
    damping: float = 1e-4
    warm_start_solver: bool = True
    hessian: Literal["gauss-newton", "exact"] = "gauss-newton"
    privacy_loss: Literal["critic", "emd"] = "emd"
    critic_steps: int = 5
    critic_lr: float = 2e-4
    gp_weight: float = 10.0
    critic_init: Literal["fresh", "kit"] = "fresh"
    prior_samples: int = 64
    shuffle: bool = True
    final_inversion_steps: int = 50
    latent_lr: float = 0.05
    latent_noise: float = 1.0
    utility: Literal["feature", "head"] = "head"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "inversion_steps", "inner_steps", "solver_iterations", "critic_steps",
                     "final_inversion_steps"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.method not in ("crafter", "crafter-z"):
            raise ValueError(f"method must be 'crafter' or 'crafter-z', got {self.method!r}")
        for name in ("lr", "inner_lr", "critic_lr", "neumann_alpha", "latent_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.beta < 0 or self.damping < 0 or self.latent_weight < 0 or self.gp_weight < 0:
            raise ValueError("beta, damping, latent_weight and gp_weight must be >= 0")
        if not 0.0 <= self.latent_noise <= 1.0:
            raise ValueError(f"latent_noise must be in [0, 1], got {self.latent_noise}")
        if self.prior_samples < 2:
            raise ValueError(f"prior_samples must be >= 2, got {self.prior_samples}")
        if self.solver not in ("cg", "neumann", "dense"):
            raise ValueError(f"solver must be 'cg', 'neumann' or 'dense', got {self.solver!r}")
        if self.hessian not in ("gauss-newton", "exact"):
            raise ValueError(f"hessian must be 'gauss-newton' or 'exact', got {self.hessian!r}")
        if self.privacy_loss not in ("critic", "emd"):
            raise ValueError(f"privacy_loss must be 'critic' or 'emd', got {self.privacy_loss!r}")
        if self.critic_init not in ("fresh", "kit"):
            raise ValueError(f"critic_init must be 'fresh' or 'kit', got {self.critic_init!r}")
        if self.utility not in ("feature", "head"):
            raise ValueError(f"utility must be 'feature' or 'head', got {self.utility!r}")

    @classmethod
    def paper(cls, **overrides: Any) -> CrafterConfig:
        """The paper's settings: 500 feature steps, Neumann with alpha 0.001 and 150 terms,
        a 600-step inversion, 10 critic steps, beta 1 on the feature distance (Alg. 1-2, App. G)."""
        base = cls(method="crafter", utility="feature", steps=500, solver="neumann", solver_iterations=150,
                   neumann_alpha=1e-3, damping=0.0, hessian="exact", inversion_steps=600, inner_steps=100,
                   critic_steps=10, lr=0.01, feature_optimizer="adam", privacy_loss="critic", beta=1.0,
                   warm_start_solver=False)  # fmt: skip
        return replace(base, **overrides)

    @classmethod
    def feature(cls, **overrides: Any) -> CrafterConfig:
        """Crafter in feature space (paper Alg. 1) keeping features near ``F0``, tuned for speed.

        Per-sample normalised gradient steps, 4 warm-started CG iterations on the
        Gauss-Newton Hessian, the exact EMD to the prior, ``beta = 0.2`` on the
        relative distortion (measured choices: README, "Crafting"). It defeats the
        white-box GAN inversion it simulates but not a decoder trained on public
        ``(Enc(X'), X')`` pairs, which still recognises the person through its ~15%
        distortion (``edge-sdk evaluate --preset feature``).
        """
        base = cls(method="crafter", utility="feature", beta=0.2, steps=30, latent_lr=0.005)
        return replace(base, **overrides)


PRESETS: dict[str, Callable[..., CrafterConfig]] = {
    "default": CrafterConfig,
    "feature": CrafterConfig.feature,
    "paper": CrafterConfig.paper,
}
"""Named crafting configurations (``edge-sdk craft --preset NAME``); each takes overrides."""


@dataclass
class CraftResult:
    """Crafted features and what crafting did.

    Attributes:
        features: Crafted features in the caller's order, shape of the input features.
        raw_features: The encoder's features ``F0`` (kept on the device; never upload them).
        diagnostics: Per-batch figures: ``utility_loss`` (mean ``||F - F0||``),
            ``relative_distortion`` (mean ``||F - F0|| / ||F0||``), ``critic_estimate``
            (the critic's Wasserstein estimate between reconstructions and prior at the
            last step), ``epsilon_pii`` and ``epsilon_pii_raw`` (for the raw features),
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
        progress: Optional callback ``progress(step, total)`` after each feature step.

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
    ) -> None:
        self.kit = kit
        self.encoder = encoder or TorchEncoder(kit)
        self.config = config or CrafterConfig()
        if self.config.utility == "head" and kit.head is None:
            raise KitError(
                f"kit {kit.manifest.name!r} has no head, which utility='head' (the default) keeps the answers of; "
                "craft with CrafterConfig.feature() or a kit with a head"
            )
        self.cache = cache if cache is not None else RepeatCache(scope=self.scope)
        self.progress = progress
        for module in kit.components().values():
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
        keys = self.cache.keys_for(raw)
        out = torch.empty_like(raw)
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
            for j, key in enumerate(new_keys):
                out[todo[key]] = crafted[j]
            self.cache.put(new_keys, crafted)
            diagnostics.update(batch_diag)
        diagnostics["seconds"] = round(time.perf_counter() - start, 3)
        return CraftResult(features=out, raw_features=raw, diagnostics=diagnostics)

    def _craft_new(
        self, raw: torch.Tensor, images: torch.Tensor | None, digests: list[bytes]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg, kit = self.config, self.kit
        gen = torch.Generator().manual_seed(_batch_seed(cfg.seed, digests))
        batch = raw.shape[0]
        order = torch.randperm(batch, generator=gen) if cfg.shuffle else torch.arange(batch)
        raw = raw[order]
        if images is not None:
            images = images[order]
        G, E = kit.generator, kit.encoder

        def solve_inner(f: torch.Tensor, z0: torch.Tensor | None, steps: int) -> torch.Tensor:
            return invert(f, generator=G, encoder=E, amortizer=kit.amortizer, init=z0, steps=steps,
                          lr=cfg.inner_lr, latent_weight=cfg.latent_weight).latent  # fmt: skip

        z_raw = solve_inner(raw, None, cfg.inversion_steps)
        with torch.no_grad():
            recon_raw = G(z_raw)
            z_r = torch.randn(cfg.prior_samples, kit.architecture.latent_dim, generator=gen)
            prior = _normalise_prior(G(z_r), images if images is not None else recon_raw)
        critic = self._new_critic(gen)
        opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.9))
        curves: dict[str, list[float]] = {"critic_estimate": [], "emd": [], "utility_loss": []}

        def train_critic(recon: torch.Tensor) -> None:
            estimate = 0.0
            for _ in range(cfg.critic_steps):
                real = prior[torch.randint(0, cfg.prior_samples, (batch,), generator=gen)]
                wasserstein = critic(real).mean() - critic(recon).mean()
                loss_d = -wasserstein + cfg.gp_weight * gradient_penalty(critic, real, recon, gen)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                estimate = wasserstein.item()
            curves["critic_estimate"].append(estimate)

        def privacy_objective(recon: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            """Fit this step's privacy loss to the current reconstructions; return it as a function."""
            if cfg.privacy_loss == "critic":
                train_critic(recon)
                return lambda x: -critic(x).mean()
            plan, emd = transport_plan(recon, prior)
            curves["emd"].append(emd)
            return lambda x: (plan * image_cost(x, prior)).sum()

        raw_norm = raw.flatten(1).norm(dim=1).clamp_min(1e-6)
        shape = (-1,) + (1,) * (raw.dim() - 1)  # broadcast a per-sample scalar

        def distance_to_raw(f: torch.Tensor) -> torch.Tensor:
            """Relative distortion ``||F_i - F0_i|| / ||F0_i||``: beta's scale does not depend on the kit."""
            return (f - raw).flatten(1).pow(2).sum(1).add(1e-12).sqrt() / raw_norm

        if cfg.utility == "head":
            assert kit.head is not None  # checked in __init__
            head = kit.head
            with torch.no_grad():
                raw_log_p = torch.log_softmax(head(raw), dim=1)

        def utility_loss(f: torch.Tensor) -> torch.Tensor:
            """Mean over the batch of what ``beta`` weighs (see ``CrafterConfig.utility``)."""
            if cfg.utility == "feature":
                return distance_to_raw(f).mean()
            log_p = torch.log_softmax(head(f), dim=1)
            return (raw_log_p.exp() * (raw_log_p - log_p)).sum(dim=1).mean()  # KL(head(F0) || head(F))

        loop_start = time.perf_counter()
        if cfg.method == "crafter":
            feats = raw.clone().requires_grad_(True)
            opt_f = torch.optim.Adam([feats], lr=cfg.lr) if cfg.feature_optimizer == "adam" else None
            momentum = torch.zeros_like(raw)
            solver = make_solver(cfg.solver, iterations=cfg.solver_iterations, alpha=cfg.neumann_alpha,
                                 damping=cfg.damping)  # fmt: skip
            # The attacker's latent keeps one Adam state across feature steps, so its
            # step sizes settle as z* converges (a fresh Adam would restart with
            # full-size sign steps after every feature update).
            z_param = z_raw.clone().requires_grad_(True)
            opt_inner = torch.optim.Adam([z_param], lr=cfg.inner_lr)
            z = z_raw
            warm: torch.Tensor | None = None
            for step in range(cfg.steps):
                if step:
                    for _ in range(cfg.inner_steps):
                        loss_inv = inversion_loss(feats.detach(), z_param, generator=G, encoder=E,
                                                  latent_weight=cfg.latent_weight)  # fmt: skip
                        (z_param.grad,) = torch.autograd.grad(loss_inv.sum(), z_param)
                        opt_inner.step()
                    z = z_param.detach().clone()
                with torch.no_grad():
                    recon = G(z)
                privacy = privacy_objective(recon)
                z_var = z.detach().requires_grad_(True)
                (grad_z,) = torch.autograd.grad(privacy(G(z_var)), z_var)
                implicit = implicit_feature_gradient(
                    feats.detach(), z, grad_z, generator=G, encoder=E, solver=solver,
                    latent_weight=cfg.latent_weight, hessian=cfg.hessian, init=warm,
                )  # fmt: skip
                warm = implicit.solution if cfg.warm_start_solver else None
                utility = utility_loss(feats)
                (grad_u,) = torch.autograd.grad(cfg.beta * utility, feats)
                total = implicit.feature_grad + grad_u
                if opt_f is not None:
                    feats.grad = total
                    opt_f.step()
                else:
                    # Per-sample normalised steps keep the gradient's direction (Adam's
                    # per-coordinate scaling does not), with a cosine-decaying length
                    # measured as a fraction of each raw feature's norm.
                    momentum = 0.8 * momentum + total
                    length = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(cfg.steps, 1)))
                    norms = momentum.flatten(1).norm(dim=1).clamp_min(1e-20)
                    with torch.no_grad():
                        feats -= (length * raw_norm / norms).view(shape) * momentum
                curves["utility_loss"].append(utility.item())
                if self.progress is not None:
                    self.progress(step + 1, cfg.steps)
            crafted = feats.detach()
            loop_seconds = time.perf_counter() - loop_start
            z_final = solve_inner(crafted, z, cfg.final_inversion_steps)
        else:  # Crafter-z (paper App. F): optimise z, release Enc(G(z)).
            z = z_raw.clone()
            if cfg.latent_noise > 0:  # drawn only then: latent_noise=0 keeps the paper's stream
                m = cfg.latent_noise
                z = math.sqrt(1 - m * m) * z + m * torch.randn(z.shape, generator=gen)
            z.requires_grad_(True)
            opt_z = torch.optim.Adam([z], lr=cfg.latent_lr)
            for step in range(cfg.steps):
                with torch.no_grad():
                    recon = G(z)
                privacy = privacy_objective(recon)
                images_z = G(z)
                utility = utility_loss(E(images_z))
                loss = privacy(images_z) + cfg.beta * utility
                (z.grad,) = torch.autograd.grad(loss, z)
                opt_z.step()
                curves["utility_loss"].append(utility.item())
                if self.progress is not None:
                    self.progress(step + 1, cfg.steps)
            with torch.no_grad():
                crafted = E(G(z))
            loop_seconds = time.perf_counter() - loop_start
            z_final = solve_inner(crafted, None, cfg.inversion_steps)
        with torch.no_grad():
            recon_final = G(z_final)
            distance = (crafted - raw).flatten(1).norm(dim=1)
            relative = distance / raw.flatten(1).norm(dim=1).clamp_min(1e-12)
        spec = kit.spec
        prior_px = to_unit_range(prior, spec)
        diagnostics = {
            "method": cfg.method,
            "step_seconds": loop_seconds / max(cfg.steps, 1),
            "utility_loss": distance.mean().item(),
            "relative_distortion": relative.mean().item(),
            "critic_estimate": curves["critic_estimate"][-1] if curves["critic_estimate"] else None,
            "epsilon_pii": epsilon_pii(to_unit_range(recon_final, spec), prior_px),
            "epsilon_pii_raw": epsilon_pii(to_unit_range(recon_raw, spec), prior_px),
            "curves": curves,
        }
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch)
        return crafted[inverse], diagnostics

    def _new_critic(self, gen: torch.Generator) -> nn.Module:
        critic = Critic(self.kit.architecture)
        if self.config.critic_init == "kit" and self.kit.critic is not None:
            critic.load_state_dict(self.kit.critic.state_dict())
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                critic = Critic(self.kit.architecture)
        return critic.train()


def craft(
    kit: Kit, *, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
    config: CrafterConfig | None = None,
) -> CraftResult:  # fmt: skip
    """One-shot crafting with a fresh crafter (no memory of earlier batches)."""
    return Crafter(kit, config).craft(images=images, features=features)
