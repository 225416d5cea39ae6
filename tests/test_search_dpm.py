"""The DPM-Solver variant of the search space (appendix E.2): per-segment orders on diffusers' single-step solver."""
import pytest
import torch
from diffusers import DPMSolverSinglestepScheduler

from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import Denoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import sample
from flexiffusion.schedulers import make_scheduler, make_segment_dpm
from flexiffusion.search.space import Candidate, SearchSpace
from flexiffusion.seeds import noise_for_seeds


def _run(unet, scheduler, plan):
    engine = StepEngine.attach(unet)
    try:
        noise = noise_for_seeds([0, 1], (1, 16, 16))
        with torch.no_grad():
            return sample(Denoiser(unet, engine), scheduler, plan, noise).latents
    finally:
        engine.detach()


def test_all_order_3_equals_diffusers_singlestep_order_3(tiny_unet):
    sp = SearchSpace((4,), (1, 9), (1, 2, 3), 9, 12, solver="dpm")
    c = Candidate.of([(9, 3)] * 4)                # branch 9 = B: every step full
    plan = sp.compile(c)
    assert plan.tokens() == ["f"] * 12
    ours = make_segment_dpm(DDPM_SCHEDULER, sp.orders(c))
    theirs = DPMSolverSinglestepScheduler.from_config(DDPM_SCHEDULER, solver_order=3, lower_order_final=False,
                                                      final_sigmas_type="sigma_min")
    theirs.set_timesteps(12)
    assert ours.order_list == theirs.order_list == [1, 2, 3] * 4
    assert torch.equal(ours.timesteps, theirs.timesteps)
    # same code path, same host: bit-identical
    assert torch.equal(_run(tiny_unet, ours, plan), _run(tiny_unet, theirs, plan))
    # and the registry's dpms3 is the same scheduler
    assert make_scheduler("dpms3", DDPM_SCHEDULER, 12).order_list == [1, 2, 3] * 4


def test_mixed_orders_and_partial_steps_run(tiny_unet):
    sp = SearchSpace((3,), (2, 9), (1, 2, 3), 9, 12, solver="dpm")
    c = Candidate.of([(2, 3), (9, 2), (2, 1)])
    s = make_segment_dpm(DDPM_SCHEDULER, sp.orders(c))
    assert s.order_list == [1, 2, 3, 1, 2, 1] and len(s.timesteps) == sp.grid_length(c) == 6
    out = _run(tiny_unet, s, sp.compile(c))
    assert torch.isfinite(out).all()
    # orders differ from the all-order-1 run of the same plan
    flat = make_segment_dpm(DDPM_SCHEDULER, [1] * 6)
    assert not torch.equal(out, _run(tiny_unet, flat, sp.compile(c)))


def test_zero_final_sigma_forces_first_order_last_step():
    cfg = dict(DDPM_SCHEDULER)
    s = make_segment_dpm(cfg, [3, 2])
    assert s.order_list == [1, 2, 3, 1, 2]
    from flexiffusion.schedulers import SegmentOrderDPMSolver

    z = SegmentOrderDPMSolver.from_config(cfg, solver_order=3, final_sigmas_type="zero")
    z.segment_orders = (3, 2)
    z.set_timesteps(5)
    assert z.order_list == [1, 2, 3, 1, 1]
    with pytest.raises(UserError, match="orders must be 1, 2 or 3"):
        make_segment_dpm(cfg, [4])


def _png_pixels(folder):
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]


def test_sample_runs_a_searched_dpm_plan_on_its_own_solver(tmp_path, capsys):
    """A DPM-Solver plan file (per-segment ``orders``, as the search writes it) samples on the segment-order solver:
    all order 3 = the registry's dpms3 on the same grid; a bad order list or a --scheduler is refused."""
    import json

    from bench.cli import main

    plan = tmp_path / "best.json"
    plan.write_text(json.dumps({"steps": ["f"] * 12, "orders": [3, 3, 3, 3]}))
    assert main(["sample", "--plan", str(plan), "--seeds", "0-1", "--out", str(tmp_path / "a")]) == 0
    assert main(["sample", "--steps", "12", "--scheduler", "dpms3", "--seeds", "0-1", "--out", str(tmp_path / "b")]) == 0
    a, b = _png_pixels(tmp_path / "a"), _png_pixels(tmp_path / "b")
    assert len(a) == 2 and all((x == y).all() for x, y in zip(a, b))
    # orders 1,2,3 differ from all order 3 (the orders are used, not ignored)
    plan.write_text(json.dumps({"steps": ["f"] * 12, "orders": [1, 2, 3, 3, 3]}))
    assert main(["sample", "--plan", str(plan), "--seeds", "0-1", "--out", str(tmp_path / "c")]) == 0
    assert any((x != y).any() for x, y in zip(_png_pixels(tmp_path / "c"), a))
    capsys.readouterr()
    plan.write_text(json.dumps({"steps": ["f"] * 12, "orders": [3, 3]}))
    assert main(["sample", "--plan", str(plan), "--seeds", "0", "--out", str(tmp_path / "d")]) == 2
    assert "do not add up to its 12 steps" in capsys.readouterr().err
    plan.write_text(json.dumps({"steps": ["f"] * 12, "orders": [3, 3, 3, 3]}))
    assert main(["sample", "--plan", str(plan), "--scheduler", "ddim", "--seeds", "0",
                 "--out", str(tmp_path / "e")]) == 2
    assert "drop --scheduler" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
