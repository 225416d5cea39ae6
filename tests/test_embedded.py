"""The embedded default: data split, U-Net config, shipped weights (sha256), classifier, digits-cnn extractor,
and the resumable training command on a tiny schedule."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.embedded import data as D
from bench.embedded.unet import NULL_CLASS, SCHEDULER_CONFIG, UNET_CONFIG, build_unet, count_params
from bench.quality.images import as_images
from bench.quality.sources import digits_uint8
from flexiffusion.errors import UserError
from flexiffusion.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


# --- data -------------------------------------------------------------------------------------------------------

def test_split_sizes_stratified_disjoint():
    x_tr, y_tr = D.load_split("train")
    x_he, y_he = D.load_split("heldout")
    assert x_tr.shape == (D.N_TRAIN, 1, 16, 16) == (1437, 1, 16, 16)
    assert x_he.shape == (D.N_HELDOUT, 1, 16, 16) == (360, 1, 16, 16)
    assert x_tr.dtype == torch.float32 and x_tr.min() >= -1 and x_tr.max() <= 1
    assert x_tr.min() == -1 and x_tr.max() == 1
    assert torch.bincount(y_he, minlength=10).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    _, _, tr_idx, he_idx = D._all_digits()
    assert len(set(tr_idx) & set(he_idx)) == 0 and len(tr_idx) + len(he_idx) == D.N_TOTAL


def test_split_deterministic_and_uint8():
    x1, y1 = D.load_split("train")
    D._all_digits.cache_clear()
    x2, y2 = D.load_split("train")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    u = digits_uint8("heldout")
    assert u.dtype == torch.uint8 and u.shape == (360, 1, 16, 16)
    assert (D.from_uint8(u) - D.load_split("heldout")[0]).abs().max() <= 1 / 127.5 + 1e-6
    ds = as_images(u)
    assert len(ds) == 360 and torch.is_tensor(ds[0]) and ds[0].dtype == torch.uint8
    with pytest.raises(ValueError):
        D.load_split("test")


# --- U-Net config -----------------------------------------------------------------------------------------------

def test_unet_config():
    assert len(UNET_CONFIG["block_out_channels"]) >= 3
    assert UNET_CONFIG["layers_per_block"] == 2
    assert any("Attn" in b for b in UNET_CONFIG["down_block_types"])
    assert any("Attn" in b for b in UNET_CONFIG["up_block_types"])
    assert UNET_CONFIG["num_class_embeds"] == 11 and NULL_CLASS == 10
    unet = build_unet()
    assert 1_000_000 <= count_params(unet) <= 3_000_000
    assert SCHEDULER_CONFIG["num_train_timesteps"] == 1000 and SCHEDULER_CONFIG["beta_schedule"] == "linear"
    assert (SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"]) == (1e-4, 0.02)
    assert SCHEDULER_CONFIG["prediction_type"] == "epsilon"
    # branch structure as DDPM CIFAR: conv_in + 3 skips per down block but the last (2)
    skips = 1 + sum(len(b.resnets) + (1 if b.downsamplers else 0) for b in unet.down_blocks)
    assert skips == 1 + 3 + 3 + 2


# --- shipped weights --------------------------------------------------------------------------------------------

def test_shipped_weights_load_and_verify():
    from bench.embedded.loader import load_embedded

    m = load_embedded(verify=True)
    assert not m.unet.training and not m.classifier.training
    assert set(m.manifest["files"]) >= {"unet/diffusion_pytorch_model.safetensors", "classifier.safetensors"}
    assert m.scheduler_config["num_train_timesteps"] == 1000
    with torch.no_grad():
        out = m.unet(torch.randn(2, 1, 16, 16), 10, class_labels=torch.tensor([3, NULL_CLASS])).sample
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_corrupted_or_missing_weights_raise_user_error(tmp_path):
    from bench.embedded.loader import WEIGHTS_DIR, load_classifier, load_embedded

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    target = copy / "unet" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-10] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"diffusion_pytorch_model\.safetensors.*corrupted.*embedded-train"):
        load_embedded(verify=True, weights_dir=copy)
    (copy / "classifier.safetensors").unlink()
    with pytest.raises(UserError, match=r"classifier\.safetensors is missing.*embedded-train"):
        load_classifier(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(UserError, match=r"manifest\.json is missing"):
        load_embedded(verify=False, weights_dir=copy)


def test_shipped_classifier_heldout_accuracy():
    from bench.embedded.classifier import accuracy
    from bench.embedded.loader import load_classifier

    clf = load_classifier()
    x, y = D.load_split("heldout")
    assert accuracy(clf, x, y) >= 0.97
    u = digits_uint8("heldout")
    assert accuracy(clf, u, y) >= 0.97  # uint8 input handled


# --- extractor --------------------------------------------------------------------------------------------------

def test_extractor_registered_and_metrics():
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from bench.embedded.extractor import FeatureExtractorDigitsCNN, ensure_registered

    assert ensure_registered() == "digits-cnn" and ensure_registered() == "digits-cnn"  # idempotent
    assert FEATURE_EXTRACTORS_REGISTRY["digits-cnn"] is FeatureExtractorDigitsCNN
    u = digits_uint8("heldout")
    a, b = as_images(u[:180]), as_images(u[180:])
    kw = dict(feature_extractor="digits-cnn", cuda=False, verbose=False, save_cpu_ram=True)
    same = torch_fidelity.calculate_metrics(input1=a, input2=a, fid=True, **kw)
    assert abs(same["frechet_inception_distance"]) < 1e-6
    m = torch_fidelity.calculate_metrics(input1=a, input2=b, fid=True, isc=True, prc=True, kid=True,
                                         kid_subset_size=100, **kw)
    assert m["frechet_inception_distance"] > 0 and m["inception_score_mean"] > 5  # 10 balanced, confident classes
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1


def test_extractor_input_forms():
    from bench.embedded.extractor import FeatureExtractorDigitsCNN

    fe = FeatureExtractorDigitsCNN("digits-cnn", ["features", "logits_unbiased"])
    u = digits_uint8("heldout")
    u = u[:8]
    f1, l1 = fe(u)
    assert f1.shape == (8, 128) and l1.shape == (8, 10)
    f3, _ = fe(u.repeat(1, 3, 1, 1))  # RGB grey images: same features
    assert torch.allclose(f1, f3, atol=1e-5)
    with pytest.raises(Exception):
        fe(D.from_uint8(u))  # float input is not what torch-fidelity hands over


# --- training command -------------------------------------------------------------------------------------------

def test_train_command_tiny_and_resume(tmp_path):
    from bench.cli import main
    from bench.embedded.loader import load_embedded
    from bench.embedded.train import install_weights

    out = tmp_path / "run"
    base = ["embedded-train", "--out", str(out), "--batch-size", "4", "--classifier-epochs", "1",
            "--checkpoint-every", "2", "--no-progress"]
    assert main(base + ["--steps", "3"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3
    m3 = json.loads((out / "weights" / "manifest.json").read_text())
    assert m3["steps"] == 3 and "--steps 3" in m3["command"]
    clf_mtime = (out / "classifier.safetensors").stat().st_mtime_ns
    out_at_3 = tmp_path / "at-3"
    shutil.copytree(out, out_at_3)

    assert main(base + ["--steps", "5"]) == 0  # resumes at step 3
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 5 and (out / "classifier.safetensors").stat().st_mtime_ns == clf_mtime
    model = load_embedded(verify=True, weights_dir=out / "weights")
    assert model.manifest["steps"] == 5

    # an uninterrupted 5-step run gives the same weights as 3 + resume to 5
    straight = tmp_path / "straight"
    assert main(["embedded-train", "--out", str(straight), "--batch-size", "4", "--classifier-epochs", "1",
                 "--checkpoint-every", "2", "--no-progress", "--steps", "5"]) == 0
    a = torch.load(out / "checkpoint.pt", weights_only=False)["ema"]
    b = torch.load(straight / "checkpoint.pt", weights_only=False)["ema"]
    assert a["optimization_step"] == b["optimization_step"] == 5
    assert all(torch.equal(x, y) for x, y in zip(a["shadow_params"], b["shadow_params"], strict=True))

    # a checkpoint of the previous hand-written EMA (the averaged module's state dict) resumes to the same weights
    old = tmp_path / "old-format"
    shutil.copytree(out_at_3, old)
    ckpt = torch.load(old / "checkpoint.pt", weights_only=False)
    names = [n for n, _ in build_unet().named_parameters()]
    ckpt["ema"] = dict(zip(names, ckpt["ema"]["shadow_params"], strict=True))
    torch.save(ckpt, old / "checkpoint.pt")
    assert main(base[:2] + [str(old)] + base[3:] + ["--steps", "5"]) == 0
    c = torch.load(old / "checkpoint.pt", weights_only=False)["ema"]
    assert all(torch.equal(x, y) for x, y in zip(c["shadow_params"], b["shadow_params"], strict=True))

    # resuming with a setting that changes the run is refused
    assert main(base + ["--steps", "6", "--seed", "1"]) == 2

    dst = install_weights(out / "weights", tmp_path / "installed")
    load_embedded(verify=True, weights_dir=dst)


def test_ema_model_update_equals_the_formula():
    """diffusers' EMAModel as make_ema configures it: update k (1-based) is ema <- d ema + (1 - d) p with
    d = min(decay, (1 + s) / (10 + s)), s = k - 1, and the first update (d = 0) a copy.  float64, so the two ways of
    writing the update agree to round-off (1e-12)."""
    from bench.embedded.train import TrainConfig, make_ema

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    cfg = TrainConfig(ema_decay=0.8)  # small enough that the cap is reached (at s = 35) within the test
    ema = make_ema(model, cfg)
    expected = [p.detach().clone() for p in model.parameters()]
    for k in range(1, 40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.step(model.parameters())
        s = k - 1
        d = 0.0 if s == 0 else min(cfg.ema_decay, (1 + s) / (10 + s))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        for got, want in zip(ema.shadow_params, expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert ema.cur_decay_value == cfg.ema_decay  # the cap was reached


def test_lr_scheduler_equals_the_closed_form_and_resumes():
    """torch's LinearLR + CosineAnnealingLR give the closed-form schedule of the shipped run at every step (the
    recursive cosine drifts by float round-off only: 1e-9 relative), also when rebuilt at a resumed step."""
    from bench.embedded.train import TrainConfig, lr_at, lr_scheduler, step_scheduler

    cfg = TrainConfig()
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=cfg.lr)
    sched = lr_scheduler(opt, cfg)
    seen = []
    for step in range(cfg.steps):
        seen.append(opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(lr_at(step, cfg), rel=1e-9), step
        step_scheduler(sched)
    assert seen[0] == pytest.approx(cfg.lr / cfg.warmup, rel=1e-12)
    assert seen[cfg.warmup] == pytest.approx(cfg.lr, rel=1e-12)
    for step in (1, cfg.warmup - 1, cfg.warmup, 4321):
        opt2 = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=cfg.lr)
        lr_scheduler(opt2, cfg, step)
        assert opt2.param_groups[0]["lr"] == pytest.approx(seen[step], rel=1e-12)


def test_train_command_bad_input(tmp_path):
    from bench.cli import main

    assert main(["embedded-train", "--out", str(tmp_path), "--batch-size", "0"]) == 2
    assert main(["embedded-train", "--out", str(tmp_path), "--threads", "0"]) == 2


# --- quality gates ----------------------------------------------------------------------------------------------

def _fake_result(n=100):
    from bench.evaluation.gates import GATES

    return dict(
        protocol=dict(n=n, ddim_steps=2, guidance_scale=3.0), gates=GATES,
        uncond=dict(fid=1.0, kid=0.01, precision=0.9, recall=0.9, isc=9.0, class_fractions=[0.1] * 10,
                    confident_fraction=0.95, sampling_s=1.0),
        real_halves=dict(fid=1.0, kid=0.0, precision=0.9, recall=0.9), fid_ratio=1.0,
        matched_size=dict(n=899, fid_samples_vs_half_b=1.0, fid_half_a_vs_half_b=1.0, ratio=1.0),
        cfg=dict(accuracy=0.99, fid=1.0, isc=9.5, sampling_s=1.0),
        passed=dict(fid=True, class_balance=True, confidence=True, cfg_accuracy=True), all_passed=True,
    )


def test_gates_report_record_and_grid(tmp_path):
    from PIL import Image

    from bench.evaluation.gates import format_report, grid_png, record
    from bench.embedded.loader import WEIGHTS_DIR, verify_weights

    text = format_report(_fake_result())
    assert text.count("[PASS]") == 4 and "all gates: PASS" in text
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    record(_fake_result(), copy)
    assert json.loads((copy / "manifest.json").read_text())["quality"]["fid_ratio"] == 1.0
    verify_weights(copy)  # recording touches the manifest only, never the hashed weight files
    u = digits_uint8("heldout")
    grid_png(u[:100], u[100:200], tmp_path / "grid.png")
    cell = 16 + 1  # make_grid: a 1-pixel frame between digits and around the grid
    side = 10 * cell + 1
    img = Image.open(tmp_path / "grid.png")
    assert img.size == ((2 * side + 4) * 4, side * 4)
    px = torch.from_numpy(__import__("numpy").array(img.convert("L")))
    # the digit at row 0, column 0 of the left grid, pixel-exact after the 4x nearest upscaling
    assert torch.equal(px[4:4 + 64:4, 4:4 + 64:4], u[0, 0])
    assert torch.equal(px[4:4 + 64:4, (side + 4 + 1) * 4:(side + 4 + 1) * 4 + 64:4], u[100, 0])


GATE_FIGURES = dict(fid_ratio=1.0, class_fractions=[0.1] * 10, confident_fraction=0.9, cfg_accuracy=0.99)


@pytest.mark.parametrize("gate,figure,inside,outside", [
    ("fid", "fid_ratio", 3.0, 3.0001),
    ("class_balance", "class_fractions", [0.05] + [0.95 / 9] * 9, [0.0499] + [0.9501 / 9] * 9),
    ("class_balance", "class_fractions", [0.15] + [0.85 / 9] * 9, [0.1501] + [0.8499 / 9] * 9),
    ("confidence", "confident_fraction", 0.85, 0.8499),
    ("cfg_accuracy", "cfg_accuracy", 0.95, 0.9499),
])
def test_each_gate_fails_when_its_figure_crosses_its_threshold(gate, figure, inside, outside):
    from bench.evaluation.gates import check_gates

    assert all(check_gates(**GATE_FIGURES).values())
    at = check_gates(**{**GATE_FIGURES, figure: inside})
    assert all(at.values()), at  # the threshold itself passes
    crossed = check_gates(**{**GATE_FIGURES, figure: outside})
    assert crossed[gate] is False and all(v for k, v in crossed.items() if k != gate), crossed


def test_gates_bad_input():
    from bench.cli import main

    assert main(["embedded-gates", "--n", "10"]) == 2


@pytest.mark.slow
def test_gates_smoke_tiny_model(tmp_path):
    """The whole gates command on a 2-step model (the figures are meaningless; the plumbing is checked)."""
    from bench.cli import main

    out = tmp_path / "run"
    assert main(["embedded-train", "--out", str(out), "--steps", "2", "--batch-size", "4", "--classifier-epochs", "1",
                 "--no-progress"]) == 0
    assert main(["embedded-gates", "--weights", str(out / "weights"), "--n", "100", "--steps", "2",
                 "--batch-size", "100", "--grid", str(tmp_path / "grid.png")]) == 0
    q = json.loads((out / "weights" / "manifest.json").read_text())["quality"]
    assert set(q["passed"]) == {"fid", "class_balance", "confidence", "cfg_accuracy"}
    assert (tmp_path / "grid.png").is_file()
