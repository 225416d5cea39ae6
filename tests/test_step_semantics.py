"""Documented step semantics (issue 8, section 4): null steps are a zero-order hold under every scheduler; for DDIM
(eta 0) and DPM-Solver order 1 that equals skipping the timestep, for PLMS and DPM-Solver 2-3 it does not; PLMS
accounting (NFE = U-Net evaluations, avg MACs of the teacher = one full step); the last PLMS step of a DDPM-style
config is an exact no-op."""
import pytest
import torch

from bench.cost.schedule_cost import CostModel
from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import Denoiser
from flexiffusion.sampler import sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import SCHEDULERS, grid_length, make_scheduler
from flexiffusion.seeds import noise_for_seeds

TOKENS = ["f", "f", "n", "f", "n", "n", "f", "f", "n", "f", "f"]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _hold_reference(unet, name, plan, noise, n):
    """Independent loop: a null step passes the previous model output to ``scheduler.step`` (zero-order hold)."""
    sched = make_scheduler(name, DDPM_SCHEDULER, n)
    x, eps = noise * sched.init_noise_sigma, None
    for step, t in zip(plan.steps, sched.timesteps):
        if step.evaluates:
            eps = unet(sched.scale_model_input(x, t), t).sample
        x = sched.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_null_step_is_zero_order_hold(tiny_unet, name):
    n = 10
    plan = Plan.from_tokens(TOKENS[:grid_length(name, n)])
    noise = noise_for_seeds([7, 8], (1, 16, 16))
    ours = sample(Denoiser(tiny_unet), make_scheduler(name, DDPM_SCHEDULER, n), plan, noise).latents
    assert torch.equal(ours, _hold_reference(tiny_unet, name, plan, noise, n))


def _dpm_on_grid(unet, order, timesteps, noise):
    """DPM-Solver multistep run on an explicit grid (every step evaluated)."""
    sched = make_scheduler(f"dpm{order}", DDPM_SCHEDULER, 10)
    sched.set_timesteps(timesteps=list(timesteps))
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x).prev_sample
    return x


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_null_equals_skip_at_order_1_only(tiny_unet, order):
    """A null step vs the solver run on the grid without that timestep (DPM-Solver does not clip: the random tiny
    U-Net's final latents reach |x| ~ 530).  Order 1 (DDIM-like): equal up to float32 rounding (measured: 2 ulps of
    the largest value, 1.2e-4 at |x| = 532; tolerance 8 ulps).  Orders 2-3: the held output enters the history at the
    null step's noise level, so later extrapolations differ (measured: 9.3 and 9.1, 1.7% of |x|; asserted > 0.1%)."""
    n = 10
    plan = Plan.from_tokens(["f", "f", "f", "n", "f", "f", "f", "f", "f", "f"])
    noise = noise_for_seeds([3, 4], (1, 16, 16))
    grid = make_scheduler(f"dpm{order}", DDPM_SCHEDULER, n).timesteps.tolist()
    null = sample(Denoiser(tiny_unet), make_scheduler(f"dpm{order}", DDPM_SCHEDULER, n), plan, noise).latents
    skipped = _dpm_on_grid(tiny_unet, order, [t for t, s in zip(grid, plan.steps) if s.evaluates], noise)
    diff, scale = (null - skipped).abs().max().item(), null.abs().max().item()
    if order == 1:
        assert diff <= 8 * torch.finfo(torch.float32).eps * scale
    else:
        assert diff > 1e-3 * scale


def test_plms_null_step_repeats_the_output_in_its_history(tiny_unet):
    """PLMS keeps raw model outputs in ``ets``: after ``f n`` the held output is in it twice.  (Step 1 repeats step 0's
    timestep and appends nothing: after ``f f f n`` ets = [e0, e2, e2].)"""
    sched = make_scheduler("plms", DDPM_SCHEDULER, 10)
    plan = Plan.from_tokens(["f", "f", "f", "n"] + ["f"] * 7)
    state = sample(Denoiser(tiny_unet), sched, plan, noise_for_seeds([1], (1, 16, 16)), stop=4)
    ets = state.scheduler["fields"]["ets"]
    assert torch.equal(ets[-1], ets[-2]) and torch.equal(ets[-1], state.last_output)
    assert not torch.equal(ets[-2], ets[-3])


class _Counter:
    def __init__(self, unet):
        self.calls = 0
        self.handle = unet.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_nfe_is_measured_evaluations_and_teacher_avg_macs_is_one_full_step(tiny_unet, name):
    """PLMS-50 runs 51 U-Net evaluations in diffusers (one repeated timestep): NFE reports them; avg MACs divides by
    the teacher's evaluations on the same grid, so the teacher's avg MACs is one full step on every scheduler."""
    n = 50
    sched = make_scheduler(name, DDPM_SCHEDULER, n)
    teacher = Plan.full(len(sched.timesteps))
    counter = _Counter(tiny_unet)
    sample(Denoiser(tiny_unet), sched, teacher, noise_for_seeds([0], (1, 16, 16)))
    counter.handle.remove()
    model = CostModel([0, 30, 70, 100], "toy")  # null, partial(1), partial(2), full
    cost = model.cost(teacher)
    assert cost.nfe == counter.calls == (51 if name == "plms" else 50)
    assert cost.avg_macs == model.full_macs and cost.speedup == 1.0
    half = Plan.from_tokens(["f", "n"] * (len(teacher) // 2) + ["f"] * (len(teacher) % 2))
    assert model.cost(half).avg_macs == 100 * half.nfe / len(teacher)


def test_last_plms_step_of_a_ddpm_config_is_a_no_op(tiny_unet):
    """With ``set_alpha_to_one=False`` and ``steps_offset=0`` the last PLMS timestep is 0 and its 'previous' alpha is
    alphas_cumprod[0] again: the update multiplies the sample by exactly 1 and adds exactly 0."""
    noise = noise_for_seeds([2], (1, 16, 16))
    seen = []
    for config in (DDPM_SCHEDULER, dict(DDPM_SCHEDULER, set_alpha_to_one=True)):
        sched = make_scheduler("plms", config, 10)
        before = []
        sample(Denoiser(tiny_unet), sched, Plan.full(11), noise, callback=lambda i, t, x: before.append(x))
        seen.append(torch.equal(before[-1], before[-2]))
    assert seen == [True, False]
