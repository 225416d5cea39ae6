"""The engine-vs-DeepCacheSDHelper parity tests (tests/test_engine.py) cannot pass with a no-op engine: in the
very settings of those tests, every branch's partial steps give another result than full steps."""
import pytest
import torch
from diffusers import DDIMScheduler

from baselines.deepcache import uniform_plan
from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import Denoiser, TextDenoiser
from flexiffusion.engine import StepEngine
from flexiffusion.sampler import sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler
from flexiffusion.seeds import noise_for_seeds


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _unet2d_latents(unet, plan):
    engine = StepEngine.attach(unet)
    try:
        return sample(Denoiser(unet, engine), make_scheduler("ddim", DDPM_SCHEDULER, len(plan)), plan,
                      noise_for_seeds([3, 4], (1, 16, 16))).latents
    finally:
        engine.detach()


def _sd_latents(pipe, plan):
    pos, neg = pipe.encode_prompt(["a cat", "a dog"], "cpu", 1, True)
    config = DDIMScheduler.from_config(pipe.scheduler.config).config
    engine = StepEngine.attach(pipe.unet)
    try:
        return sample(TextDenoiser(pipe.unet, engine, guidance_scale=5.0), make_scheduler("ddim", config, len(plan)),
                      plan, noise_for_seeds([0, 1], (4, 16, 16)),
                      {"prompt_embeds": pos, "negative_prompt_embeds": neg}).latents
    finally:
        engine.detach()


def test_partial_steps_change_the_unet2d_result_at_every_branch(tiny_unet):
    """Settings of ``test_partial_equals_deepcache_helper_unet2d``: 8 DDIM steps, interval 3, seeds 3, 4."""
    full = _unet2d_latents(tiny_unet, Plan.full(8))
    for branch in range(1, 10):
        ours = _unet2d_latents(tiny_unet, uniform_plan(8, 3, branch))
        assert torch.isfinite(ours).all()
        assert not torch.equal(ours, full), f"branch {branch}: partial steps gave the full-step result"


def test_partial_steps_change_the_sd_result_at_every_branch(tiny_sd):
    """Settings of ``test_partial_equals_deepcache_helper_sd``: 7 DDIM steps, interval 2, CFG 5."""
    full = _sd_latents(tiny_sd, Plan.full(7))
    for branch in range(1, 7):
        ours = _sd_latents(tiny_sd, uniform_plan(7, 2, branch))
        assert not torch.equal(ours, full), f"branch {branch}: partial steps gave the full-step result"
