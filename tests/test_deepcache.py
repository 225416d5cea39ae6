"""DeepCache schedules: the published "+" numbers, DeepCache's own functions on many settings, bit parity with
DeepCacheSDHelper (uniform, and "+" through the helper with its step test replaced by set membership)."""
import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from baselines.deepcache import (DeepCacheConfig, num_full_steps, paper_setting, quad_center_full_steps,
                                 quad_full_steps, uniform_plan)
from flexiffusion.denoisers import TextDenoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler
from flexiffusion.seeds import noise_for_seeds


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _deepcache():
    return pytest.importorskip("DeepCache", reason="DeepCache not installed: the parity references are its own "
                                                   "functions and helper (the `test` extra)")


def _original(name: str):
    """A schedule function of DeepCache's SD pipeline, read from the installed package (that module itself does not
    import on current diffusers, so the one function is compiled on its own)."""
    path = Path(_deepcache().__file__).parent / "sd" / "pipeline_stable_diffusion.py"
    node = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    return namespace[name]


def test_published_plus_example():
    full, pow_ = quad_center_full_steps(50, num_full_steps(50, 5), center=15, pow=1.4)
    assert full == [0, 5, 9, 13, 17, 21, 26, 31, 37, 43] and pow_ == 1.4
    plan = DeepCacheConfig(50, 5, 2, "sd", center=15, pow=1.4).plan()
    assert [i for i, s in enumerate(plan.steps) if s.kind == "full"] == full
    assert plan.branches == {2} and plan.nfe == 50


def test_complex_arithmetic_matters():
    """A real-valued rewrite of (-center) ** (1/pow) gives other indices on the published example."""
    x = np.linspace(-(15 ** (1 / 1.4)), 35 ** (1 / 1.4), 11)
    real = [0] + [int(v) + 15 for v in np.unique((np.sign(x) * np.abs(x) ** 1.4).astype(np.int32))[1:-1]]
    assert real != quad_center_full_steps(50, 10, 15, 1.4)[0]


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_sd_form_equals_deepcache_on_many_settings():
    ref = _original("sample_from_quad_center")
    checked = failed = 0
    for total, interval, center, pow_ in itertools.product((8, 10, 12, 20, 50, 100, 250), (2, 3, 5, 10, 20),
                                                           (0, 3, 5, 7, 9, 15, 40), (1.05, 1.1, 1.4, 2.0)):
        n = num_full_steps(total, interval)
        try:
            want = ref(total, n, center, pow_)
        except ValueError:
            with pytest.raises(UserError, match="no pow"):
                quad_center_full_steps(total, n, center, pow_)
            failed += 1
            continue
        assert quad_center_full_steps(total, n, center, pow_) == ([int(v) for v in want[0]], want[1])
        checked += 1
    assert checked > 800 and failed >= 10  # both outcomes exercised


def test_ldm_form():
    """DeepCache's LDM ``sample_from_quad``: no center, no pow search, duplicates collapse."""
    assert quad_full_steps(50, 10, 1.5) == [0, 1, 4, 8, 12, 17, 23, 29, 35, 42]
    assert len(quad_full_steps(250, 50, 1.5)) == 49  # LDM-4-G's 250 steps, N 5: one duplicate collapsed
    # DeepCache's SD pipeline has the same formula plus a pow search: where its first pow already gives n steps,
    # the two agree
    ref = _original("sample_from_quad")
    agreed = 0
    for total, n, pow_ in itertools.product((20, 50, 100, 250), (4, 5, 10, 25), (1.2, 1.5, 2.0)):
        try:
            want, used = ref(total, n, pow_)
        except ValueError:  # its search found no pow
            continue
        if used == pow_:
            assert quad_full_steps(total, n, pow_) == [int(v) for v in want]
            agreed += 1
    assert agreed > 20
    few = quad_full_steps(10, 9, 3.0)  # crowded at the start: duplicates collapse to fewer full steps
    assert len(few) < 9 and few == sorted(set(few))
    plan = DeepCacheConfig(50, 5, 1, "ldm", pow=1.5).plan()
    assert [i for i, s in enumerate(plan.steps) if s.kind == "full"] == quad_full_steps(50, 10, 1.5)


def test_uniform_and_paper_settings():
    assert uniform_plan(10, 5, 2).tokens() == ["f", "p2", "p2", "p2", "p2"] * 2
    for letter, n in zip("ABCD", (2, 5, 10, 20)):
        plan = paper_setting(letter, 100, 3).plan()
        assert plan.tokens().count("f") == 100 // n and plan.branches == {3}
    assert DeepCacheConfig(20, 1, 3, "sd").plan() == Plan.full(20)  # interval 1: every step full, as the original


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=10, interval=2, center=5, pow=1.4), "no pow"),
    (dict(steps=10, interval=0), "interval must be >= 1"),
    (dict(steps=10, branch=0), "branch must be >= 1"),
    (dict(steps=10, form="cubic"), "unknown DeepCache form"),
])
def test_bad_settings(kwargs, match):
    kwargs.setdefault("form", "sd")
    with pytest.raises(UserError, match=match):
        DeepCacheConfig(**kwargs).plan()


def _helper_latents(pipe, helper_cls, seeds, n, prompts, **params):
    helper = helper_cls(pipe=pipe)
    helper.set_params(**params)
    helper.enable()
    try:
        return pipe(prompts, num_inference_steps=n, guidance_scale=5.0, latents=noise_for_seeds(seeds, (4, 16, 16)),
                    output_type="latent").images
    finally:
        helper.disable()


def _our_latents(pipe, plan, seeds, prompts):
    pos, neg = pipe.encode_prompt(prompts, "cpu", 1, True)
    engine = StepEngine.attach(pipe.unet)
    try:
        return sample(TextDenoiser(pipe.unet, engine, guidance_scale=5.0),
                      make_scheduler("ddim", pipe.scheduler.config, len(plan)), plan,
                      noise_for_seeds(seeds, (4, 16, 16)), {"prompt_embeds": pos, "negative_prompt_embeds": neg}
                      ).latents
    finally:
        engine.detach()


@pytest.fixture
def ddim_sd(tiny_sd):
    tiny_sd.scheduler = DDIMScheduler.from_config(tiny_sd.scheduler.config)
    yield tiny_sd
    tiny_sd.scheduler = PNDMScheduler.from_config(tiny_sd.scheduler.config)


@pytest.mark.parametrize("branch", [1, 4])
def test_uniform_equals_deepcache_helper(ddim_sd, branch):
    helper = _deepcache().DeepCacheSDHelper
    seeds, prompts, n = [0], ["a cat"], 6
    ref = _helper_latents(ddim_sd, helper, seeds, n, prompts, cache_interval=3, cache_branch_id=branch - 1)
    ours = _our_latents(ddim_sd, DeepCacheConfig(n, 3, branch).plan(), seeds, prompts)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, _our_latents(ddim_sd, Plan.full(n), seeds, prompts))  # caching changed something


@pytest.mark.parametrize("config,expected", [
    (DeepCacheConfig(12, 3, 2, "sd", center=4, pow=1.4), {0, 3, 5, 8}),
    (DeepCacheConfig(12, 3, 2, "ldm"), {0, 1, 4, 7}),          # LDM form, DeepCache's default pow 1.5
])
def test_plus_equals_helper_with_set_membership(ddim_sd, config, expected):
    """The helper decides "full step" by ``(step - start) % interval == 0``; with exactly that test replaced by
    ``(step - start) in full`` (its other decisions untouched), it must give our engine's result bit for bit."""
    base = _deepcache().DeepCacheSDHelper
    full = {i for i, s in enumerate(config.plan().steps) if s.kind == "full"}
    assert full == expected and full != set(range(0, 12, 3))

    class SetHelper(base):
        def is_skip_step(self, block_i, layer_i, blocktype="down"):
            self.start_timestep = self.cur_timestep if self.start_timestep is None else self.start_timestep
            if self.cur_timestep - self.start_timestep in full:
                return False
            # skip_mode other than 'uniform' switches the helper's own interval test off; the rest is its own
            return super().is_skip_step(block_i, layer_i, blocktype)

    seeds, prompts = [2], ["a tree"]
    ref = _helper_latents(ddim_sd, SetHelper, seeds, 12, prompts, cache_interval=3,
                          cache_branch_id=config.branch - 1, skip_mode="set")
    ours = _our_latents(ddim_sd, config.plan(), seeds, prompts)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, _our_latents(ddim_sd, uniform_plan(12, 3, 2), seeds, prompts))
    assert not torch.equal(ours, _our_latents(ddim_sd, Plan.full(12), seeds, prompts))
