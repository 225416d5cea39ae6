"""The embedded text-to-image model: captions and tokens, the bundle (random weights and shipped), CLIP-score
ordering with the shipped scoring CLIP, ToMe and DeepCache plans on it, resumable training, bad input."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from bench.embedded import data as D
from bench.embedded.t2i import captions as C
from bench.embedded.t2i import tokens as T
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import grid_length
from flexiffusion.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def random_bundle():
    from bench.models.embedded_t2i import random_t2i_bundle

    return random_t2i_bundle(seed=0)


@pytest.fixture(scope="module")
def shipped():
    from bench.models import load_model

    return load_model("embedded-t2i")


def _generate(bundle, plan, prompts, seeds, guidance=3.0, cfg="batched"):
    from bench.generate import generate_latents

    return generate_latents(bundle, plan, seeds, scheduler="plms", prompts=prompts, guidance_scale=guidance, cfg=cfg,
                            batch_size=len(seeds), progress=False)


# --- captions and tokens ----------------------------------------------------------------------------------------

def test_templates_disjoint_and_name_the_digit():
    assert not set(C.TRAIN_TEMPLATES) & set(C.HELDOUT_TEMPLATES)
    for t in C.TRAIN_TEMPLATES + C.HELDOUT_TEMPLATES:
        assert "{word}" in t or "{num}" in t
    prompts, digits = C.prompt_set(25)
    assert digits[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert prompts[7] == "a sketch of the numeral seven" and prompts[11] == "someone wrote the number 1 on paper"
    assert max(len(T.tokenizer().encode(p)) for p in C.prompt_set(80)[0]) <= T.CONTEXT_LENGTH - 2  # none truncated


def test_long_prompt_truncated_with_a_warning(caplog):
    long = "a handwritten seven " + "with many more words " * 8
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        tok = T.tokenize([long, "the digit 7"])
    assert tok.shape == (2, T.CONTEXT_LENGTH)
    assert tok[0, -1] == T.tokenizer().eot_token_id  # end-of-text kept at the end
    assert len(caplog.records) == 1 and "truncated" in caplog.text and "many more words" in caplog.text


def test_token_augmentation_keeps_start_and_end():
    tok = T.tokenize(["a handwritten seven", ""] * 50, warn=False)
    aug = T.insert_random_tokens(tok, torch.Generator().manual_seed(0), prob=0.5)
    again = T.insert_random_tokens(tok, torch.Generator().manual_seed(0), prob=0.5)
    assert torch.equal(aug, again)
    assert (aug[:, 0] == T.tokenizer().sot_token_id).all()
    assert ((aug == T.tokenizer().eot_token_id).sum(1) == 1).all()
    grew = T.eot_positions(aug) - T.eot_positions(tok)
    assert grew.min() == 0 and grew.max() >= 1 and grew.max() <= 2
    changed = grew > 0
    assert (aug[changed, 1:].ne(0).sum(1) > tok[changed, 1:].ne(0).sum(1)).all()


# --- bundle (random weights) ------------------------------------------------------------------------------------

def test_random_bundle_structure_and_encode(random_bundle):
    from flexiffusion.engine import StepEngine

    b = random_bundle
    assert b.conditioning == "text" and b.sample_shape == (1, 16, 16) and b.encode_prompts is not None
    assert b.extras["default_sampler"] == dict(scheduler="plms", steps=50, guidance_scale=1.5, cfg="batched")
    assert StepEngine(b.unet).num_branches == 6
    e = b.encode_prompts(["a handwritten seven", "the digit 3"])
    assert e["prompt_embeds"].shape == (2, T.CONTEXT_LENGTH, 64) == e["negative_prompt_embeds"].shape
    assert torch.equal(e["negative_prompt_embeds"][0], e["negative_prompt_embeds"][1])  # the empty prompt
    with pytest.raises(UserError, match="empty prompt list"):
        b.encode_prompts([])
    with pytest.raises(UserError, match="negative prompts"):
        b.encode_prompts(["a", "b", "c"], negative=["x", "y"])


def test_random_bundle_samples_with_both_cfg_modes(random_bundle):
    plan = Plan.full(grid_length("plms", 3))
    prompts = ["a handwritten seven", "the digit 3"]
    a = _generate(random_bundle, plan, prompts, [0, 1], cfg="batched")
    b = _generate(random_bundle, plan, prompts, [0, 1], cfg="split")
    assert a.shape == (2, 1, 16, 16) and torch.isfinite(a).all()
    # batched (one U-Net call at batch 4) vs split (two calls at batch 2): same math, float32 kernel noise only;
    # measured max abs difference here ~1e-6
    assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(UserError, match="needs prompts"):
        _generate(random_bundle, plan, None, [0])


def test_cost_model_of_the_t2i_preset(tmp_path):
    from baselines.deepcache import uniform_plan
    from bench.cost.schedule_cost import CostModel

    model = CostModel.for_preset("embedded-t2i", cache=tmp_path)
    assert len(model.step_macs) == 1 + 6 + 1  # null, partial 1..6, full
    assert 0 < model.step_macs[1] < model.step_macs[-1]
    plan = uniform_plan(grid_length("plms", 50), 5, 2)
    assert model.speedup(plan) > 1.5


def test_deepcache_uniform_plan_runs_with_plms(random_bundle):
    from baselines.deepcache import uniform_plan

    n = grid_length("plms", 6)
    prompts, seeds = ["a handwritten seven", "the digit 3"], [0, 1]
    full = _generate(random_bundle, Plan.full(n), prompts, seeds)
    for branch in (1, 3, 6):
        cached = _generate(random_bundle, uniform_plan(n, 3, branch), prompts, seeds)
        assert cached.shape == full.shape and torch.isfinite(cached).all()
        assert not torch.equal(cached, full)
    with pytest.raises(UserError):
        _generate(random_bundle, uniform_plan(n, 3, 7), prompts, seeds)  # only 6 branches


# --- training ---------------------------------------------------------------------------------------------------

TINY = ["--batch-size", "4", "--text-steps", "2", "--clip-steps", "2", "--contrastive-batch", "8",
        "--checkpoint-every", "2", "--no-progress"]


def _train(out, steps, *extra):
    from bench.cli import main

    return main(["embedded-train", "--model", "embedded-t2i", "--out", str(out), "--steps", str(steps), *TINY,
                 *extra])


def test_training_resume_equals_straight_run_and_refuses_changed_settings(tmp_path):
    from bench.embedded.t2i.loader import load_t2i

    out, straight = tmp_path / "run", tmp_path / "straight"
    assert _train(out, 3) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3
    encoder_mtime = (out / "text_encoder.safetensors").stat().st_mtime_ns
    assert _train(out, 5) == 0  # resumes at step 3; the finished encoder stages are reused
    assert (out / "text_encoder.safetensors").stat().st_mtime_ns == encoder_mtime
    assert _train(straight, 5) == 0
    a = torch.load(out / "checkpoint.pt", weights_only=False)
    b = torch.load(straight / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 5
    assert a["ema"]["optimization_step"] == b["ema"]["optimization_step"] == 5
    assert all(torch.equal(x, y) for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    model = load_t2i(out / "weights")
    m = model.manifest
    assert m["unet"]["steps"] == 5 and "--steps 5" in m["command"] and "--model embedded-t2i" in m["command"]
    assert set(m["files"]) == {"unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                               "scheduler/scheduler_config.json", "text_encoder.safetensors", "clip.safetensors",
                               "flexbench-digits-clip.json"}
    assert m["data"]["n_train"] == D.N_TRAIN and "random_state=0" in m["data"]["split"]
    assert set(m["seeds"]) >= {"unet_init", "text_encoder_init", "clip_init"}

    assert _train(out, 6, "--seed", "1") == 2  # a changed setting is refused, nothing rewritten
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5


def test_training_bad_input(tmp_path):
    from bench.cli import main

    base = ["embedded-train", "--model", "embedded-t2i", "--out", str(tmp_path)]
    assert main(base + ["--batch-size", "0"]) == 2
    assert main(base + ["--clip-steps", "0"]) == 2
    assert main(base + ["--classifier-epochs", "3"]) == 2


# --- shipped weights --------------------------------------------------------------------------------------------

def test_shipped_weights_verify_size_and_manifest():
    from bench.embedded.t2i.loader import WEIGHTS_DIR, verify_weights

    m = verify_weights()
    total = sum((WEIGHTS_DIR / name).stat().st_size for name in m["files"])
    assert total < 20 * 2**20 and total == m["size_bytes"]
    assert m["quality"] is not None, "gates not recorded: run flexbench embedded-gates --model embedded-t2i"
    assert set(m["quality"]["passed"]) == {"zero_shot", "prompt_accuracy", "clip_ratio", "fid_ratio"}
    assert "embedded-train --model embedded-t2i" in m["command"]


def test_shipped_bundle(shipped):
    assert shipped.conditioning == "text" and shipped.weights_id.startswith("embedded-t2i:")
    assert not shipped.unet.training and not shipped.extras["text_encoder"].training


def test_clip_score_right_caption_beats_wrong_caption_on_real_digits(shipped):
    """Through the suite's CLIP-score path (ClipScorer) with the shipped scoring CLIP, on held-out real digits."""
    from bench.evaluation.gates_t2i import heldout_digits
    from bench.embedded.t2i.clip_model import register
    from bench.quality.clip_score import ClipScorer

    scorer = ClipScorer(register(), pretrained=shipped.extras["clip_weights"], device="cpu", batch_size=500)
    images, labels = heldout_digits()
    right = C.captions_for(labels.tolist(), "heldout")
    wrong = C.captions_for(((labels + 3) % 10).tolist(), "heldout")
    s_right, s_wrong = scorer(images, right)["clip_score"], scorer(images, wrong)["clip_score"]
    assert s_right > s_wrong + 5
    # per image too: the own caption wins for the large majority
    img = scorer.image_embeddings(images)
    own = (img * scorer.text_embeddings(right)).sum(-1)
    other = (img * scorer.text_embeddings(wrong)).sum(-1)
    assert (own > other).float().mean() >= 0.9


def test_scoring_clip_zero_shot_gate_remeasured(shipped):
    """The first gate, re-measured: 360 held-out digits x 8 held-out templates, 10-way, >= 95%."""
    from bench.evaluation.gates_t2i import real_clip_figures, scorer_for
    from bench.embedded.t2i.loader import load_t2i

    real = real_clip_figures(scorer_for(load_t2i()))
    assert real["zero_shot"] >= 0.95 and real["clip_gap"] > 5
    recorded = shipped.extras["manifest"]["quality"]["real"]
    assert abs(real["zero_shot"] - recorded["zero_shot"]) < 0.01  # same files, same figure up to float noise


def test_tome_on_the_shipped_model(shipped):
    from baselines.tome import ToMeConfig, apply_tome, remove_tome

    plan = Plan.full(grid_length("plms", 4))
    prompts, seeds = ["a handwritten seven", "the digit 3"], [0, 1]

    def run():
        torch.manual_seed(123)  # tomesd's random partition draws from the global RNG
        return _generate(shipped, plan, prompts, seeds)

    ref = run()
    apply_tome(shipped.unet, ToMeConfig(ratio=0.5))
    try:
        merged = run()
    finally:
        remove_tome(shipped.unet)
    assert not torch.equal(merged, ref)
    assert torch.equal(run(), ref)


def test_missing_or_corrupted_weights_name_the_file_and_the_retrain_command(tmp_path):
    from bench.cli import main
    from bench.embedded.t2i.loader import WEIGHTS_DIR
    from bench.models import load_model

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    target = copy / "text_encoder.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-5] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"text_encoder\.safetensors is corrupted.*embedded-train --model embedded-t2i"):
        load_model("embedded-t2i", str(copy))
    shutil.copyfile(WEIGHTS_DIR / "text_encoder.safetensors", target)
    (copy / "clip.safetensors").unlink()
    with pytest.raises(UserError, match=r"clip\.safetensors is missing.*embedded-train --model embedded-t2i"):
        load_model("embedded-t2i", str(copy))
    assert main(["embedded-gates", "--model", "embedded-t2i", "--weights", str(copy), "--no-record"]) == 2
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"manifest\.json.*embedded-train --model embedded-t2i"):
        load_model("embedded-t2i", str(copy))


def test_gates_bad_input():
    from bench.cli import main

    assert main(["embedded-gates", "--model", "embedded-t2i", "--n", "5"]) == 2


def test_gates_report_and_record(tmp_path):
    from bench.evaluation.gates import record
    from bench.evaluation.gates_t2i import GATES, format_report
    from bench.embedded.t2i.loader import WEIGHTS_DIR, verify_weights

    fake = dict(protocol=dict(n=100, sampler="PLMS 50 steps (grid 51), batched CFG", guidance_scale=3.0),
                gates=GATES, real=dict(zero_shot=0.97, clip_own=30.0, clip_wrong=5.0, clip_gap=25.0),
                prompt_accuracy=0.9, clip=dict(samples=29.0, real_same_prompts=30.0, ratio=29 / 30),
                fid=dict(n=100, samples_vs_half_b=50.0, half_a_vs_half_b=40.0, ratio=1.25),
                cost=dict(s_per_image=0.5, cpu_s_per_image=0.4, threads=1, batch_size=100),
                passed=dict(zero_shot=True, prompt_accuracy=False, clip_ratio=True, fid_ratio=True), all_passed=False)
    text = format_report(fake)
    assert text.count("[PASS]") == 3 and text.count("[FAIL]") == 1 and "all gates: FAIL" in text
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    record(fake, copy)
    assert json.loads((copy / "manifest.json").read_text())["quality"]["fid"]["ratio"] == 1.25
    verify_weights(copy)  # recording touches the manifest only


@pytest.mark.slow
def test_gates_end_to_end_on_a_tiny_training(tmp_path):
    """The whole gates command on a 2-step model (figures meaningless; the plumbing is checked)."""
    from bench.cli import main

    out = tmp_path / "run"
    assert _train(out, 2) == 0
    assert main(["embedded-gates", "--model", "embedded-t2i", "--weights", str(out / "weights"), "--n", "20",
                 "--steps", "2", "--batch-size", "20", "--grid", str(tmp_path / "grid.png")]) == 0
    q = json.loads((out / "weights" / "manifest.json").read_text())["quality"]
    assert set(q["passed"]) == {"zero_shot", "prompt_accuracy", "clip_ratio", "fid_ratio"}
    assert (tmp_path / "grid.png").is_file()
