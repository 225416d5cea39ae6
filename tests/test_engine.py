"""Step engine: full = native forward, partial(b) = DeepCache's own helper for every b, detach, CFG contexts."""
import copy

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, PNDMScheduler

from baselines.deepcache import uniform_plan
from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import ClassDenoiser, Denoiser, TextDenoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import sample
from flexiffusion.schedule import Step
from flexiffusion.schedulers import make_scheduler
from flexiffusion.seeds import generators, noise_for_seeds



@pytest.fixture
def deepcache_helper():
    """DeepCache's own ``DeepCacheSDHelper``, the parity tests' reference: a test-only dependency (the ``test``
    extra). Where it is missing those tests are skipped with this reason; the other engine tests still run."""
    module = pytest.importorskip("DeepCache", reason="DeepCache not installed: the engine-vs-DeepCacheSDHelper "
                                                     "parity references are missing (pip install -e '.[test]')",
                                 exc_type=ModuleNotFoundError)
    return module.DeepCacheSDHelper


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # module-wide; never torch.set_grad_enabled(False), which leaks into later test files
        yield


def test_branch_numbering(tiny_unet):
    engine = StepEngine(tiny_unet)
    assert engine.num_branches == 9
    b = {x.index: x for x in engine.branches}
    assert b[1].producer == "conv_in" and b[1].consumer == "up.2.resnets.2"
    assert b[4].producer == "down.0.downsamplers.0" and b[4].consumer == "up.1.resnets.2"
    assert b[9].producer == "down.2.resnets.1" and b[9].consumer == "up.0.resnets.0"


def test_full_step_equals_native_forward(tiny_unet, tiny_class_unet, tiny_sd):
    x = torch.randn(2, 1, 16, 16)
    for unet, kw in ((tiny_unet, {}), (tiny_class_unet, {"class_labels": torch.tensor([1, 10])})):
        ref = unet(x, 17, **kw).sample
        engine = StepEngine.attach(unet)
        with engine.step(Step.full()):
            out = unet(x, 17, **kw).sample
        engine.detach()
        assert torch.equal(out, ref)
    unet = tiny_sd.unet
    z, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    ref = unet(z, 500, encoder_hidden_states=ctx).sample
    engine = StepEngine.attach(unet)
    with engine.step(Step.full()):
        out = unet(z, 500, encoder_hidden_states=ctx).sample
    engine.detach()
    assert torch.equal(out, ref)


def _ddim_pipe(unet):
    return DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(DDPM_SCHEDULER))


@pytest.mark.parametrize("branch", range(1, 10))
def test_partial_equals_deepcache_helper_unet2d(tiny_unet, branch, deepcache_helper):
    """uniform_plan(interval=3, b) == DeepCacheSDHelper(cache_interval=3, cache_branch_id=b-1), bit for bit."""
    pipe, seeds, n = _ddim_pipe(tiny_unet), [3, 4], 8
    helper = deepcache_helper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=branch - 1)
    helper.enable()
    ref = pipe(batch_size=2, generator=generators(seeds), num_inference_steps=n, output_type="np").images
    helper.disable()
    engine = StepEngine.attach(tiny_unet)
    state = sample(Denoiser(tiny_unet, engine), make_scheduler("ddim", DDPM_SCHEDULER, n),
                   uniform_plan(n, 3, branch), noise_for_seeds(seeds, (1, 16, 16)))
    engine.detach()
    ours = (state.latents / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert (ours == ref).all()


def _sd_latents(pipe, seeds, n, **kw):
    latents = noise_for_seeds(seeds, (4, 16, 16))
    return pipe(["a cat", "a dog"], num_inference_steps=n, guidance_scale=5.0, latents=latents,
                output_type="latent", **kw).images


@pytest.mark.parametrize("branch", range(1, 7))
def test_partial_equals_deepcache_helper_sd(tiny_sd, branch, deepcache_helper):
    """Tiny StableDiffusionPipeline (DDIM, CFG batched): our engine == DeepCache's helper for every branch.

    (DDIM rather than the pipeline's PNDM: the helper finds the step index with ``timesteps.index(t)``, which
    maps PLMS's repeated bootstrap timestep to the wrong step.)"""
    seeds, n = [0, 1], 7
    tiny_sd.scheduler = DDIMScheduler.from_config(tiny_sd.scheduler.config)
    helper = deepcache_helper(pipe=tiny_sd)
    helper.set_params(cache_interval=2, cache_branch_id=branch - 1)
    helper.enable()
    ref = _sd_latents(tiny_sd, seeds, n)
    helper.disable()
    pos, neg = tiny_sd.encode_prompt(["a cat", "a dog"], "cpu", 1, True)
    engine = StepEngine.attach(tiny_sd.unet)
    assert engine.num_branches == 6
    state = sample(TextDenoiser(tiny_sd.unet, engine, guidance_scale=5.0),
                   make_scheduler("ddim", tiny_sd.scheduler.config, n), uniform_plan(n, 2, branch),
                   noise_for_seeds(seeds, (4, 16, 16)), {"prompt_embeds": pos, "negative_prompt_embeds": neg})
    engine.detach()
    tiny_sd.scheduler = PNDMScheduler.from_config(tiny_sd.scheduler.config)
    assert torch.equal(state.latents, ref)


def test_detach_restores_original(tiny_unet):
    x = torch.randn(1, 1, 16, 16)
    ref = tiny_unet(x, 3).sample
    engine = StepEngine.attach(tiny_unet)
    with engine.step(Step.full()):
        tiny_unet(x, 900)
    with engine.step(Step.partial(2)):
        changed = tiny_unet(x, 3).sample
    assert not torch.equal(changed, ref)  # the partial step really reused features from t=900
    assert torch.equal(tiny_unet(x, 3).sample, ref)  # outside a step: native behaviour
    engine.detach()
    assert torch.equal(tiny_unet(x, 3).sample, ref)
    assert not any(hasattr(m, "_diffusers_hook") for m in tiny_unet.modules())
    StepEngine.attach(tiny_unet).detach()  # can attach again


def test_engine_errors(tiny_unet):
    engine = StepEngine.attach(tiny_unet)
    with pytest.raises(UserError, match="already attached"):
        StepEngine.attach(tiny_unet)
    with pytest.raises(UserError, match="without a cache"):
        with engine.step(Step.partial(2)):
            tiny_unet(torch.randn(1, 1, 16, 16), 3)
    with pytest.raises(UserError, match="out of range"):
        with engine.step(Step.partial(10)):
            pass
    engine.detach()


def test_cfg_contexts_keep_separate_caches(tiny_class_unet):
    """Split CFG passes each use their own cache: equal to two independent engines, one per pass."""
    n, plan, labels = 6, uniform_plan(6, 3, 4), torch.tensor([2, 7])
    noise = noise_for_seeds([5, 6], (1, 16, 16))
    engine = StepEngine.attach(tiny_class_unet)
    split = sample(ClassDenoiser(tiny_class_unet, engine, 3.0, "split", null_class=10),
                   make_scheduler("ddim", DDPM_SCHEDULER, n), plan, noise, labels).latents
    batched = sample(ClassDenoiser(tiny_class_unet, engine, 3.0, "batched", null_class=10),
                     make_scheduler("ddim", DDPM_SCHEDULER, n), plan, noise, labels).latents
    engine.detach()
    # reference: two copies of the model, each with its own engine
    u_unet, c_unet = copy.deepcopy(tiny_class_unet), copy.deepcopy(tiny_class_unet)
    u_eng, c_eng = StepEngine.attach(u_unet), StepEngine.attach(c_unet)
    sched = make_scheduler("ddim", DDPM_SCHEDULER, n)
    x = noise
    for i, t in enumerate(sched.timesteps):
        step = plan.steps[i]
        with u_eng.step(step):
            eu = u_unet(x, t, class_labels=torch.full((2,), 10)).sample
        with c_eng.step(step):
            ec = c_unet(x, t, class_labels=labels).sample
        x = sched.step(eu + 3.0 * (ec - eu), t, x).prev_sample
    assert torch.equal(split, x)
    torch.testing.assert_close(batched, split, atol=1e-4, rtol=0)


def test_hook_pattern_apply_remove(tiny_unet):
    """diffusers' four parts: config dataclass, per-context state, the hook, apply_/remove_ functions."""
    from flexiffusion.engine import (HOOK_NAME, StepCacheState, StepEngineConfig, StepEngineHook, apply_step_engine,
                                     remove_step_engine)

    x = torch.randn(1, 1, 16, 16)
    ref = tiny_unet(x, 3).sample
    engine = apply_step_engine(tiny_unet, StepEngineConfig(minimal_cache=True))
    hooks = [m._diffusers_hook.get_hook(HOOK_NAME) for m in tiny_unet.modules() if hasattr(m, "_diffusers_hook")]
    assert len(hooks) == len(engine.all_keys) and all(isinstance(h, StepEngineHook) for h in hooks)
    with engine.step(Step.full()):
        with engine.context("cond"):
            tiny_unet(x, 900)
    assert set(engine.states.states()) == {"cond"}
    assert isinstance(engine.states.states()["cond"], StepCacheState)
    remove_step_engine(tiny_unet)
    assert torch.equal(tiny_unet(x, 3).sample, ref)
    assert not any(hasattr(m, "_diffusers_hook") for m in tiny_unet.modules())


def _flat(v):
    return [t for x in v for t in _flat(x)] if isinstance(v, (tuple, list)) else [v]


def _run_all_branches(unet, x, t, kw, config):
    from flexiffusion.engine import StepEngineConfig

    engine = StepEngine.attach(unet, StepEngineConfig(minimal_cache=config))
    outs, sizes = {}, {}
    try:
        for b in range(1, engine.num_branches + 1):
            with engine.step(Step.full(), keep={b}):
                full = unet(x, 900, **kw).sample
            feats = engine.cache_state()["contexts"]["default"]
            sizes[b] = {k for k, v in feats.items()
                        if any(o.untyped_storage().nbytes() > o.element_size() for o in _flat(v))}
            with engine.step(Step.partial(b)):
                outs[b] = unet(x, t, **kw).sample
            assert not torch.equal(outs[b], full)
        return outs, sizes, engine
    finally:
        engine.detach()


def test_full_step_keeps_only_what_the_partial_step_reads(tiny_unet, tiny_sd):
    """Per kept branch one real tensor (the input of the consumer of skip b), one-element stand-ins for the other
    skipped outputs; the partial steps are bit-identical to keeping every skipped output."""
    x = torch.randn(2, 1, 16, 16)
    z, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    for unet, inp, kw in ((tiny_unet, x, {}), (tiny_sd.unet, z, {"encoder_hidden_states": ctx})):
        small, real, engine = _run_all_branches(unet, inp, 17, kw, True)
        big, _, _ = _run_all_branches(unet, inp, 17, kw, False)
        for b in small:
            assert real[b] == {engine.read_key(b)}
            assert torch.equal(small[b], big[b])
