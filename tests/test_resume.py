"""Resuming from a stored sampler state is exact, or refused with one clear line (issue 8, section 2)."""
import pickle
import re

import pytest
import torch

from bench.models.tiny import DDPM_SCHEDULER, tiny_unet2d
from flexiffusion.denoisers import ClassDenoiser, Denoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import SamplerState, sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import SCHEDULERS, make_scheduler
from flexiffusion.seeds import STEP_NOISE, generators, noise_for_seeds, stream_seed


@pytest.fixture
def engine(tiny_unet):
    engine = StepEngine.attach(tiny_unet)
    yield engine
    engine.detach()


def _noise(seeds=(1, 2)):
    return noise_for_seeds(list(seeds), (1, 16, 16))


def test_stale_features_reported_case(tiny_unet, engine):
    """Parent ``f p1 f p3 p3 f`` stopped at step 4, child ``f p1 f p3 p1 p1`` resumed from it.  The full step at
    index 2 kept branch 3 only, so the child's p1 at step 4 would read branch-1 features of step 0 (before the fix:
    no error and latents off by up to 0.55).  The resume must be refused; with branch 1 kept it must be exact."""
    den, n = Denoiser(tiny_unet, engine), 6
    parent = Plan.from_tokens("f p1 f p3 p3 f".split())
    child = Plan.from_tokens("f p1 f p3 p1 p1".split())
    mid = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), parent, _noise(), stop=4)
    assert mid.kept == {3}
    assert set(mid.cache["contexts"]["default"]) <= engine.skipped(3)  # branch 1's entries of step 0 were dropped
    with pytest.raises(UserError, match=r"use branch 1 but the state kept branches \{3\}"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), child, _noise(), state=mid)
    direct = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), child, _noise())
    kept = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), parent, _noise(), stop=4, cache_branches={1, 3})
    assert kept.kept == {1, 3}
    resumed = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), child, _noise(), state=kept)
    assert torch.equal(resumed.latents, direct.latents)


def test_partial_step_at_unkept_branch_fails_in_the_engine(tiny_unet, engine):
    from flexiffusion.schedule import Step

    x = torch.randn(1, 1, 16, 16)
    with engine.step(Step.full(), keep={3}):
        tiny_unet(x, 10)
    with pytest.raises(UserError, match=re.escape("kept branches {3} only")):
        with engine.step(Step.partial(1)):
            tiny_unet(x, 5)


def _mid(den, sched_name="ddim", n=6, noise=None, cond=None, **kw):
    plan = Plan.from_tokens(["f", "p2", "n", "f", "p2", "f", "f"][:n])
    return plan, sample(den, make_scheduler(sched_name, DDPM_SCHEDULER, n), plan, _noise() if noise is None else noise,
                        cond, stop=4, cache_branches={2}, **kw)


def test_resume_under_other_grid_scheduler_noise_fails(tiny_unet, engine):
    den = Denoiser(tiny_unet, engine)
    plan, mid = _mid(den)
    seven = Plan.from_tokens(plan.tokens() + ["f"])
    with pytest.raises(UserError, match=r"^cannot resume: the state was made on another timestep grid \(6 steps, "
                                        r"got 7 steps\)"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, 7), seven, _noise(), state=mid)
    with pytest.raises(UserError, match="^cannot resume: the state was made with DDIMScheduler, not "
                                        "DPMSolverMultistepScheduler"):
        sample(den, make_scheduler("dpm2", DDPM_SCHEDULER, 6), plan, _noise(), state=mid)
    other_config = dict(DDPM_SCHEDULER, beta_schedule="squaredcos_cap_v2")
    with pytest.raises(UserError, match=r"^cannot resume: .*another scheduler config \(beta_schedule"):
        sample(den, make_scheduler("ddim", other_config, 6), plan, _noise(), state=mid)
    with pytest.raises(UserError, match="^cannot resume: the state was made with other initial noise"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, 6), plan, _noise((1, 3)), state=mid)
    with pytest.raises(UserError, match="stop=2 lies before the state's step 4"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, 6), plan, _noise(), state=mid, stop=2)
    # one line each: the CLI prints the message as is
    try:
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, 6), plan, _noise((1, 3)), state=mid)
    except UserError as exc:
        assert "\n" not in str(exc)


def test_resume_under_other_model_or_cond_or_guidance_fails(tiny_class_unet):
    engine = StepEngine.attach(tiny_class_unet)
    try:
        labels = torch.tensor([2, 7])
        den = ClassDenoiser(tiny_class_unet, engine, 3.0, null_class=10)
        plan, mid = _mid(den, cond=labels)
        fresh = lambda: make_scheduler("ddim", DDPM_SCHEDULER, 6)  # noqa: E731
        ok = sample(den, fresh(), plan, _noise(), labels, state=mid)
        assert torch.equal(ok.latents, sample(den, fresh(), plan, _noise(), labels, cache_branches={2}).latents)
        with pytest.raises(UserError, match="^cannot resume: the state was made with other condition"):
            sample(den, fresh(), plan, _noise(), torch.tensor([2, 8]), state=mid)
        with pytest.raises(UserError, match=r"^cannot resume: the state was made with other guidance"):
            sample(ClassDenoiser(tiny_class_unet, engine, 2.0, null_class=10), fresh(), plan, _noise(), labels,
                   state=mid)
        with pytest.raises(UserError, match=r"^cannot resume: the state was made with other guidance"):
            sample(ClassDenoiser(tiny_class_unet, engine, 3.0, "split", null_class=10), fresh(), plan, _noise(),
                   labels, state=mid)
        with torch.no_grad():
            next(tiny_class_unet.parameters()).view(-1)[0] += 1e-3  # e.g. another checkpoint
        with pytest.raises(UserError, match="^cannot resume: the state was made with other model weights"):
            sample(den, fresh(), plan, _noise(), labels, state=mid)
    finally:
        engine.detach()


def test_other_model_weights_change_the_fingerprint():
    from flexiffusion.fingerprint import model_fingerprint

    a, b = tiny_unet2d(seed=0), tiny_unet2d(seed=1)
    assert model_fingerprint(a) == model_fingerprint(tiny_unet2d(seed=0)) != model_fingerprint(b)
    before = model_fingerprint(a)
    with torch.no_grad():
        a.conv_out.bias.mul_(2)  # in place: remembered fingerprints are invalidated by the version counter
    assert model_fingerprint(a) != before


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_sample_is_grad_free_outside_no_grad(tiny_unet, scheduler):
    """As docs/architecture.md shows it: no torch.no_grad() around the call (deepcopy of scheduler tensors with
    history used to raise for plms and dpm1-3, and DDIM built a graph)."""
    assert torch.is_grad_enabled()
    engine = StepEngine.attach(tiny_unet)
    try:
        sched = make_scheduler(scheduler, DDPM_SCHEDULER, 5)
        plan = Plan.from_tokens((["f", "p3", "n", "f", "p1", "f"])[:len(sched.timesteps)])
        out = sample(Denoiser(tiny_unet, engine), sched, plan, _noise(), stop=3, cache_branches={1, 3})
        out = sample(Denoiser(tiny_unet, engine), make_scheduler(scheduler, DDPM_SCHEDULER, 5), plan, _noise(),
                     state=out.clone())
    finally:
        engine.detach()
    tensors = [out.latents, out.last_output] + [v for f in out.scheduler["fields"].values()
                                                for v in (f if isinstance(f, list) else [f])
                                                if isinstance(v, torch.Tensor)]
    assert all(not t.requires_grad and t.grad_fn is None for t in tensors)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_state_is_plain_data_and_survives_save_load_and_pickle(tiny_unet, engine, scheduler, tmp_path):
    den, n = Denoiser(tiny_unet, engine), 7
    sched = make_scheduler(scheduler, DDPM_SCHEDULER, n)
    length = len(sched.timesteps)
    plan = Plan.from_tokens((["f", "p2", "n", "f", "p5", "p1", "f", "n", "p2"])[:length])
    mid = sample(den, sched, plan, _noise(), stop=5, cache_branches={1, 2, 5})
    path = tmp_path / "state.pt"
    mid.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind
    loaded = SamplerState.load(path)  # torch.load(weights_only=True): plain data only
    shipped = pickle.loads(pickle.dumps(mid))  # e.g. to a Ray worker
    direct = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), plan, _noise(), cache_branches={1, 2, 5})
    for s in (loaded, shipped, mid):
        resumed = sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), plan, _noise(), state=s,
                         cache_branches={1, 2, 5})
        assert torch.equal(resumed.latents, direct.latents)
    assert torch.equal(sample(den, make_scheduler(scheduler, DDPM_SCHEDULER, n), plan, _noise(), state=mid).latents,
                       direct.latents)  # the state was not modified by resuming from it


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        SamplerState.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a state")
    with pytest.raises(UserError, match="not a readable sampler state"):
        SamplerState.load(tmp_path / "bad.pt")
    torch.save({"format": 0}, tmp_path / "old.pt")
    with pytest.raises(UserError, match="not a sampler state of format 1"):
        SamplerState.load(tmp_path / "old.pt")


def test_stochastic_resume_is_exact_with_eta(tiny_unet, engine, tmp_path):
    """DDIM eta > 0 draws per-step noise from per-sample generators; their states travel with the state."""
    den, n, seeds = Denoiser(tiny_unet, engine), 6, [4, 9]
    plan = Plan.from_tokens("f p2 n f p2 f".split())

    def kwargs():
        return {"eta": 1.0, "generator": generators(seeds, STEP_NOISE)}

    direct = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds), step_kwargs=kwargs(),
                    cache_branches={2})
    mid = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds), stop=3, step_kwargs=kwargs(),
                 cache_branches={2})
    mid.save(tmp_path / "s.pt")
    for s in (mid, SamplerState.load(tmp_path / "s.pt")):
        resumed = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds), state=s,
                         step_kwargs=kwargs())
        assert torch.equal(resumed.latents, direct.latents)
    deterministic = sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds),
                           step_kwargs={"eta": 1.0, "generator": generators([4, 10], STEP_NOISE)})
    assert (deterministic.latents[0] - direct.latents[0]).abs().max() == 0  # sample 0's stream depends on seed 4 only
    assert (deterministic.latents[1] - direct.latents[1]).abs().max() > 1e-2
    with pytest.raises(UserError, match="other step-noise generators"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds), state=mid,
               step_kwargs={"eta": 1.0, "generator": generators([4, 10], STEP_NOISE)})
    with pytest.raises(UserError, match="other scheduler step arguments"):
        sample(den, make_scheduler("ddim", DDPM_SCHEDULER, n), plan, _noise(seeds), state=mid,
               step_kwargs={"eta": 0.5, "generator": generators(seeds, STEP_NOISE)})


def test_stream_seeds_do_not_collide():
    """seed + 2**31 (the old step-noise offset) collided: seed 2**31's initial noise = seed 0's step noise."""
    pairs = [(s, k) for s in list(range(200)) + [2**31, 2**31 + 1, 2**40] for k in range(3)]
    derived = [stream_seed(s, k) for s, k in pairs]
    assert len(set(derived)) == len(pairs)
    assert stream_seed(5, 0) == 5  # stream 0 = the seed itself, as a diffusers pipeline seeds its generators
    with pytest.raises(UserError, match="non-negative"):
        stream_seed(-1, 1)


def test_moving_a_state_keeps_shape_stand_ins_small():
    """A resume on another device moves the cache; a one-element stand-in must stay one element (``Tensor.to``
    would materialise its full extent).  The meta device stands in for a GPU here."""
    from flexiffusion.sampler import _to

    stand_in = torch.zeros(()).expand(64, 256, 32, 32)
    moved = _to(stand_in, torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == stand_in.shape and moved.untyped_storage().nbytes() == 4
    view = torch.arange(12.0).reshape(3, 4)[:, 1:]
    assert torch.equal(_to(view, torch.device("cpu")), view)
    assert _to(view, torch.device("meta")).shape == (3, 3)
