"""The sampler loop: all-full plans reproduce diffusers pipelines; null steps; per-sample seeds; resumable state."""
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from baselines.deepcache import uniform_plan
from bench.generate import generate_images, generate_latents
from bench.models import load_model
from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import Denoiser, TextDenoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import SamplerState, sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import SCHEDULERS, grid_length, make_scheduler
from flexiffusion.seeds import generators, noise_for_seeds, parse_seeds



@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # module-wide; never torch.set_grad_enabled(False), which leaks into later test files
        yield


def test_all_full_plan_equals_ddim_pipeline(tiny_unet):
    seeds, n = [11, 12, 13], 20
    pipe = DDIMPipeline(unet=tiny_unet, scheduler=DDIMScheduler.from_config(DDPM_SCHEDULER))
    ref = pipe(batch_size=3, generator=generators(seeds), num_inference_steps=n, eta=0.0, output_type="np").images
    state = sample(Denoiser(tiny_unet), make_scheduler("ddim", DDPM_SCHEDULER, n), Plan.full(n),
                   noise_for_seeds(seeds, (1, 16, 16)))
    ours = (state.latents / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(ours - ref).max() <= 1e-5


def test_all_full_plan_equals_sd_pipeline_pndm(tiny_sd):
    seeds, n, prompts = [0, 1], 6, ["a red cube", "a blue ball"]
    latents = noise_for_seeds(seeds, (4, 16, 16))
    ref = tiny_sd(prompts, num_inference_steps=n, guidance_scale=7.5, latents=latents.clone(),
                  output_type="latent").images
    pos, neg = tiny_sd.encode_prompt(prompts, "cpu", 1, True)
    sched = make_scheduler("plms", tiny_sd.scheduler.config, n)
    assert len(sched.timesteps) == grid_length("plms", n) == n + 1
    state = sample(TextDenoiser(tiny_sd.unet, guidance_scale=7.5), sched, Plan.full(n + 1), latents,
                   {"prompt_embeds": pos, "negative_prompt_embeds": neg})
    assert (state.latents - ref).abs().max() <= 1e-5


def _ddim_jump_reference(unet, noise, plan, n):
    """Independent DDIM (eta 0) over the evaluated timesteps only, each update jumping to the next one."""
    sched = make_scheduler("ddim", DDPM_SCHEDULER, n)
    ts = [int(t) for t in sched.timesteps]
    ac = sched.alphas_cumprod
    live = [i for i, s in enumerate(plan.steps) if s.evaluates]
    x = noise.clone()
    for k, i in enumerate(live):
        t = ts[i]
        a_t = ac[t]
        a_next = ac[ts[live[k + 1]]] if k + 1 < len(live) else torch.tensor(1.0)
        eps = unet(x, sched.timesteps[i]).sample
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def test_ddim_null_step_equals_skipped_timestep(tiny_unet):
    n = 10
    plan = Plan.from_tokens(["f", "f", "n", "f", "n", "n", "f", "f", "n", "f"])
    noise = noise_for_seeds([7, 8], (1, 16, 16))
    ours = sample(Denoiser(tiny_unet), make_scheduler("ddim", DDPM_SCHEDULER, n), plan, noise).latents
    ref = _ddim_jump_reference(tiny_unet, noise, plan, n)
    # float32 rounding of two arithmetic orders, amplified by 1 / sqrt(alpha_cumprod) ~ 100 at the first steps:
    # measured 5.9e-6 to 7.2e-6 max abs (|x| <= 1) over seeds (7, 8), (1, 2), (3, 4, 5, 6); tolerance 3x that
    assert (ours - ref).abs().max() <= 2.5e-5
    # and a null step really changes the result compared with evaluating that step
    full = sample(Denoiser(tiny_unet), make_scheduler("ddim", DDPM_SCHEDULER, n), Plan.full(n), noise).latents
    assert (full - ours).abs().max() > 1e-3


def test_noise_depends_only_on_seed():
    a = noise_for_seeds([5], (1, 4, 4))
    b = noise_for_seeds([1, 5, 9], (1, 4, 4))
    assert torch.equal(a[0], b[1])
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError):
        parse_seeds("a-b")


def test_batch_size_independence():
    bundle = load_model("tiny-class")
    plan = uniform_plan(8, 3, 4)
    seeds = [0, 1, 2, 3, 4]
    a = generate_latents(bundle, plan, seeds, batch_size=5, guidance_scale=2.0, progress=False)
    b = generate_latents(bundle, plan, seeds, batch_size=2, guidance_scale=2.0, progress=False)
    c = generate_latents(bundle, plan, [3], batch_size=1, guidance_scale=2.0, progress=False)
    # CPU kernels block differently by batch size: equal up to float32 rounding (seen: 6e-5 after 8 guided steps)
    torch.testing.assert_close(a, b, atol=2e-4, rtol=0)
    torch.testing.assert_close(a[3:4], c, atol=2e-4, rtol=0)
    other = generate_latents(bundle, plan, [0, 1, 2, 9, 4], batch_size=5, guidance_scale=2.0, progress=False)
    assert (other[3] - a[3]).abs().max() > 1e-2  # a different seed really gives a different image
    imgs = generate_images(bundle, plan, seeds, batch_size=2, progress=False)
    assert imgs.dtype == torch.uint8 and imgs.shape == (5, 1, 16, 16)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_resume_from_state_is_exact(tiny_unet, scheduler, tmp_path):
    """Run plan A to step k, resume plan B (same first k steps) from that state: identical to running B."""
    n = 9
    sched = make_scheduler(scheduler, DDPM_SCHEDULER, n)
    length = len(sched.timesteps)
    a = Plan.from_tokens((["f", "p2", "n", "f", "p5"] + ["f"] * length)[:length])
    b = Plan.from_tokens((["f", "p2", "n", "f", "p5"] + ["p1", "n", "f", "p3"] * 3)[:length])
    noise = noise_for_seeds([1, 2], (1, 16, 16))
    engine = StepEngine.attach(tiny_unet)
    den = Denoiser(tiny_unet, engine)
    keep = {1, 2, 3, 5}
    mid = sample(den, sched, a, noise, stop=5, cache_branches=keep)
    resumed = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), b, noise, state=mid, cache_branches=keep)
    direct = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), b, noise, cache_branches=keep)
    again = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), b, noise, state=mid, cache_branches=keep)
    mid.save(tmp_path / "state.pt")
    reloaded = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), b, noise,
                      state=SamplerState.load(tmp_path / "state.pt"), cache_branches=keep)
    assert torch.equal(reloaded.latents, direct.latents)
    engine.detach()
    assert torch.equal(resumed.latents, direct.latents) and torch.equal(again.latents, direct.latents)
    assert torch.isfinite(direct.latents).all()
    with pytest.raises(UserError, match="cannot resume"):
        sample(den, sched, Plan.full(length), noise, state=mid)


def test_sampler_errors(tiny_unet):
    with pytest.raises(UserError, match="unknown scheduler"):
        make_scheduler("euler-magic", DDPM_SCHEDULER, 10)
    with pytest.raises(UserError, match="no step engine"):
        sample(Denoiser(tiny_unet), make_scheduler("ddim", DDPM_SCHEDULER, 4), uniform_plan(4, 2, 1),
               noise_for_seeds([0], (1, 16, 16)))
    with pytest.raises(UserError, match="base grid has 4"):
        sample(Denoiser(tiny_unet), make_scheduler("ddim", DDPM_SCHEDULER, 4), Plan.full(5),
               noise_for_seeds([0], (1, 16, 16)))


def test_model_fingerprint_of_a_tensor_above_float32_integers():
    """A weight of 29.5 M values (SD v1.5's largest): float32 linspace rounds the last sample index up to numel();
    the fingerprint clamps it (smaller tensors keep their indices, so earlier fingerprints are unchanged)."""
    import torch

    from flexiffusion.fingerprint import model_fingerprint

    big = torch.nn.Linear(5120, 5760, bias=False)   # 29,491,200 values
    assert len(model_fingerprint(big)) == 16
