"""The rFID teacher's cache key is complete: every input that changes the teacher's images changes the key
(one test per input), the reported stale-teacher bug is reproduced and fixed, and the embedded model's
``weights_id`` names its weights, not its config."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from bench.evaluation import relative_fid
from bench.models import load_model
from bench.quality.rfid import DEFAULT_PLAN, RelativeFID, TeacherSpec
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from quality_standins import register

EX = register()
SEEDS = range(4)
GRID = 2


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.filterwarnings("ignore:FID statistics of 4 images")
def test_changed_timestep_spacing_gets_a_fresh_teacher_and_the_teacher_plan_scores_zero():
    """The reported bug: after changing ``timestep_spacing`` the stale teacher was served, so the all-full plan
    scored rFID 2.99 instead of 0."""
    bundle = load_model("tiny-ddpm")
    before = relative_fid(bundle, SEEDS, GRID, extractor=EX)
    old = before.teacher_images().tensor()
    assert bundle.scheduler_config.get("timestep_spacing", "leading") == "leading"
    bundle.scheduler_config["timestep_spacing"] = "trailing"  # DDIM 2 steps: timesteps 500, 0 -> 999, 499
    after = relative_fid(bundle, SEEDS, GRID, extractor=EX)
    assert after.teacher.key() != before.teacher.key()
    new = after.teacher_images().tensor()
    assert not torch.equal(new, old)  # the change matters: a stale teacher would be wrong
    same = after(Plan.full(GRID))
    assert same["mse"] == 0.0 and abs(same["rfid"]) < 1e-6


def _stand_in(calls):
    def generate(plan):
        calls.append(plan)
        level = 0.0 if plan.nfe == len(plan) else 0.5
        g = torch.Generator().manual_seed(0)
        return (torch.rand(8, 1, 16, 16, generator=g) * (1 - level)).clamp(0, 1)
    return generate


def _spec(**kw):
    return TeacherSpec(model_id="stand-in", weights_hash="0" * 8, scheduler="ddim", grid_length=GRID,
                       seeds=tuple(range(8)), **kw)


@pytest.mark.filterwarnings("ignore:FID statistics of 8 images")
def test_a_custom_teacher_plan_is_another_teacher():
    custom = Plan.from_tokens(["f", "n"], name="custom-teacher")
    calls = []
    default = RelativeFID(_stand_in(calls), _spec(), extractor=EX)
    other = RelativeFID(_stand_in(calls), _spec(), extractor=EX, plan=custom)
    assert default.teacher.plan == DEFAULT_PLAN and other.teacher.plan == custom.digest()
    assert other.teacher.key() != default.teacher.key()
    d, o = default.teacher_images().tensor(), other.teacher_images().tensor()
    assert calls == [Plan.full(GRID, name="teacher"), custom]  # the custom teacher was not served the default's
    assert not torch.equal(d, o)
    assert other(custom)["mse"] == 0.0
    with pytest.raises(UserError, match="teacher plan has 3 steps"):
        RelativeFID(_stand_in(calls), _spec(), extractor=EX, plan=Plan.full(3))
    with pytest.raises(UserError, match="custom teacher plan"):
        RelativeFID(_stand_in(calls), _spec(plan=custom.digest()), extractor=EX)  # which plan? refuse


# One entry per input of the teacher's images: (name, model kind, change to the bundle or the arguments).
def _weight(module_of):
    def change(bundle, kw):
        p = max(module_of(bundle).parameters(), key=lambda t: t.numel())
        with torch.no_grad():
            p.view(-1)[p.numel() // 2] += 1e-3  # one value in the middle of the largest tensor
    return change


def _arg(name, value):
    return lambda bundle, kw: kw.update({name: value})


def _config(key, value):
    return lambda bundle, kw: bundle.scheduler_config.update({key: value})


INPUTS = [
    ("scheduler config (timestep_spacing)", "tiny-ddpm", _config("timestep_spacing", "trailing")),
    ("scheduler config (beta_end)", "tiny-ddpm", _config("beta_end", 0.03)),
    ("scheduler name", "tiny-ddpm", _arg("scheduler", "dpm2")),
    ("teacher plan", "tiny-ddpm", _arg("plan", Plan.from_tokens(["f", "n"]))),
    ("grid length", "tiny-ddpm", _arg("grid_length", 3)),
    ("seeds", "tiny-ddpm", _arg("seeds", range(1, 5))),
    ("seed order", "tiny-ddpm", _arg("seeds", [1, 0, 2, 3])),
    ("guidance", "tiny-class", _arg("guidance_scale", 2.0)),
    ("labels", "tiny-class", _arg("labels", [1, 2, 3, 4])),
    ("prompts", "tiny-sd", _arg("prompts", ["a", "b", "c", "e"])),
    ("U-Net weight", "tiny-ddpm", _weight(lambda b: b.unet)),
    ("text encoder weight", "tiny-sd", _weight(lambda b: b.extras["pipeline"].text_encoder)),
    ("VAE weight", "tiny-sd", _weight(lambda b: b.extras["pipeline"].vae)),
    ("weights id", "tiny-ddpm", lambda b, kw: setattr(b, "weights_id", "other")),
    ("dtype", "tiny-ddpm", lambda b, kw: b.unet.to(torch.float64)),
    ("sample shape", "tiny-ddpm", lambda b, kw: setattr(b, "sample_shape", (1, 8, 8))),
    ("conditioning", "tiny-class", lambda b, kw: setattr(b, "conditioning", "none")),
]


@pytest.mark.parametrize("name,kind,change", INPUTS, ids=[i[0] for i in INPUTS])
def test_changing_an_input_changes_the_teacher_key(name, kind, change):
    bundle = load_model(kind)
    kw = dict(seeds=SEEDS, grid_length=GRID, scheduler="ddim")
    if kind == "tiny-sd":
        kw["prompts"] = ["a", "b", "c", "d"]
    key = TeacherSpec.of_bundle(bundle, **kw).key()
    assert TeacherSpec.of_bundle(bundle, **kw).key() == key  # deterministic
    change(bundle, kw)
    assert TeacherSpec.of_bundle(bundle, **kw).key() != key, name


def test_the_device_is_read_from_the_bundle_and_changes_the_key():
    """No second device on a CPU host: the bundle's device lands in the spec, and another device changes the key."""
    spec = TeacherSpec.of_bundle(load_model("tiny-ddpm"), SEEDS, GRID)
    assert spec.device == "cpu" and spec.dtype == "torch.float32"
    assert dataclasses.replace(spec, device="cuda:0").key() != spec.key()


def test_a_scheduler_factory_cannot_key_the_cache():
    with pytest.raises(UserError, match="registry name"):
        TeacherSpec.of_bundle(load_model("tiny-ddpm"), SEEDS, GRID, scheduler=lambda *a, **k: None)


def test_embedded_weights_id_is_the_sha256_of_the_weights_file():
    from bench.embedded.loader import WEIGHTS_DIR

    bundle = load_model("embedded")
    weights = hashlib.sha256((WEIGHTS_DIR / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    config = hashlib.sha256((WEIGHTS_DIR / "unet" / "config.json").read_bytes())
    assert bundle.weights_id == f"embedded:{weights.hexdigest()[:16]}"
    assert config.hexdigest()[:16] not in bundle.weights_id
