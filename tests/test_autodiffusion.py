"""AutoDiffusion: layer-drop hook (shortcut / identity, removal), candidate operators and budget, the subset
scheduler against DDIM, per-module MACs against a trace of the dropped model, seeded and resumable search."""
import json

import numpy as np
import pytest
import torch

from baselines.autodiffusion.candidate import Candidate, SearchSpace
from baselines.autodiffusion.layers import LayerDropConfig, apply_layer_drop, droppable_layers, remove_layer_drop
from baselines.autodiffusion.sampling import subset_scheduler
from baselines.autodiffusion.search import Evolution, EvolutionConfig
from bench.models.tiny import DDPM_SCHEDULER
from flexiffusion.denoisers import Denoiser
from flexiffusion.errors import UserError
from flexiffusion.sampler import sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler
from flexiffusion.seeds import noise_for_seeds


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_droppable_layers(tiny_unet):
    names = droppable_layers(tiny_unet)
    assert len(names) == 23 and names[0] == "down_blocks.0.resnets.0"
    assert "mid_block.attentions.0" in names and names.index("mid_block.attentions.0") == 9


def test_drop_hook_semantics_and_removal(tiny_unet):
    x = torch.randn(2, 1, 16, 16)
    ref, ref20 = tiny_unet(x, 10).sample, tiny_unet(x, 20).sample
    resnet, attn = "down_blocks.1.resnets.0", "down_blocks.1.attentions.0"  # resnet 16 -> 32 channels: 1x1 shortcut
    seen = {}
    handles = [tiny_unet.get_submodule(n).register_forward_hook(
        lambda m, args, out, n=n: seen.__setitem__(n, (args[0], out))) for n in (resnet, attn)]
    apply_layer_drop(tiny_unet, LayerDropConfig({10: frozenset({resnet, attn})}))
    out = tiny_unet(x, 10).sample
    r_in, r_out = seen[resnet]
    block = tiny_unet.get_submodule(resnet)
    assert torch.equal(r_out, block.conv_shortcut(r_in) / block.output_scale_factor)
    a_in, a_out = seen[attn]
    assert torch.equal(a_out, a_in)
    assert not torch.equal(out, ref)
    assert torch.equal(tiny_unet(x, 20).sample, ref20)  # other timesteps: nothing dropped
    with pytest.raises(UserError, match="already attached"):
        apply_layer_drop(tiny_unet, LayerDropConfig({}))
    remove_layer_drop(tiny_unet)
    for h in handles:
        h.remove()
    assert torch.equal(tiny_unet(x, 10).sample, ref)
    assert not any(hasattr(m, "_diffusers_hook") for m in tiny_unet.modules())
    with pytest.raises(UserError, match="not a droppable layer"):
        apply_layer_drop(tiny_unet, LayerDropConfig({10: frozenset({"conv_in"})}))


def test_operators_keep_drops_with_their_timestep():
    space = SearchSpace(1000, 6, 23, max_drop_fraction=0.2)
    rng = np.random.default_rng(0)
    parent = Candidate.make((t, {t % 23}) for t in (950, 700, 500, 300, 100, 5))
    for _ in range(200):
        child = space.mutate(parent, rng, m_prob=0.5, fraction=0.0)
        assert len(set(child.timesteps)) == 6 and list(child.timesteps) == sorted(child.timesteps, reverse=True)
        kept = {t: d for t, d in child.steps if t in parent.timesteps}
        assert all(d == frozenset({t % 23}) for t, d in kept.items())  # a surviving timestep keeps its drops
    redrawn = [space.mutate(parent, rng, m_prob=1.0, fraction=0.2) for _ in range(50)]
    assert any(c.drops != parent.drops for c in redrawn)  # mutation really changes drop sets (the original's no-op)
    assert all(space.feasible(c, 0.2) for c in redrawn)
    other = space.random(rng, 0.2)
    kids = [space.crossover(parent, other, rng) for _ in range(50)]
    assert all(k is None or set(k.steps) <= set(parent.steps) | set(other.steps) for k in kids)
    assert Candidate.from_key(parent.key()) == parent


def test_budget():
    space = SearchSpace(1000, 4, 20, budget_layers=76, max_drop_fraction=0.1)  # at most 2 drops per step
    assert space.executed(space.uniform()) == 80 and not space.feasible(space.uniform())
    assert space.feasible(Candidate.make((t, {0, 1}) for t in (0, 250, 500, 750)))
    assert not space.feasible(Candidate.make((t, {0, 1, 2}) for t in (0, 250, 500, 750)))  # 3 > 10% of 20
    with pytest.raises(UserError, match="below what any candidate can reach"):
        SearchSpace(1000, 4, 20, budget_layers=71, max_drop_fraction=0.1)
    with pytest.raises(UserError, match="K = 1001"):
        SearchSpace(1000, 1001, 20)


def test_subset_scheduler_equals_ddim(tiny_unet):
    """The uniform subset on the DDIM-equivalent subset scheduler == diffusers DDIM at K steps.  DDIM's x0 clipping
    is off (the subset scheduler has none), so these latents of a random U-Net reach |x| ~ 80; the two paths round
    differently in float32: measured max 2e-6 absolute on an AVX2 host, 2.3e-5 absolute = 3e-7 relative on an
    AVX-512 (Zen 5) host, i.e. 3e-7 of the latents' largest magnitude.  Tolerance: 2e-6 of that magnitude (about 7x
    the worst measured; an element-wise relative bound fails on near-zero entries)."""
    config = dict(DDPM_SCHEDULER, clip_sample=False)
    space = SearchSpace(1000, 5, 23)
    noise = noise_for_seeds([1, 2], (1, 16, 16))
    ddim = sample(Denoiser(tiny_unet), make_scheduler("ddim", config, 5), Plan.full(5), noise).latents
    sched = subset_scheduler(space.uniform().timesteps)(config, 5)
    assert sched.timesteps.tolist() == [800, 600, 400, 200, 0]
    ours = sample(Denoiser(tiny_unet), sched, Plan.full(5), noise).latents
    assert (ours - ddim).abs().max() <= 2e-6 * ddim.abs().max()
    other = sample(Denoiser(tiny_unet), subset_scheduler([999, 700, 420, 90, 3])(config, 5), Plan.full(5), noise)
    assert (other.latents - ddim).abs().max() > 1e-2  # another subset is another sampler


def test_drop_macs_from_module_counts(tiny_unet):
    from baselines.costing import DropCost
    from bench.cost.macs import count_call

    names = droppable_layers(tiny_unet)
    inputs = (torch.randn(1, 1, 16, 16), torch.tensor(500), {})
    cost = DropCost(tiny_unet, inputs, names)
    dropped = frozenset({2, 3, 9, 14})
    apply_layer_drop(tiny_unet, LayerDropConfig({500: frozenset(names[i] for i in dropped)}))
    traced = count_call(tiny_unet, inputs[:2], method="__call__", static={"return_dict": False})
    remove_layer_drop(tiny_unet)
    assert cost.step(dropped) == traced.paper and cost.step(dropped, "complete") == traced.complete
    assert cost.step(frozenset()) > cost.step(dropped)


def _fitness(c):
    """A cheap deterministic stand-in for FID: distance to a target schedule, small reward per drop."""
    return sum(min(abs(t - x) for x in (80, 310, 555, 901)) for t in c.timesteps) - 0.5 * c.dropped


def test_search_seeded_and_resumable(tmp_path):
    space = SearchSpace(1000, 4, 10, budget_layers=38, max_drop_fraction=0.2)
    config = EvolutionConfig(population=12, top_k=4, mutation=6, crossover=3, epochs=5, stage1_epochs=2,
                             ramp_epochs=2, seed=3)
    a = Evolution(space, _fitness, config, progress=False).run()
    b = Evolution(space, _fitness, config, progress=False).run()
    assert a.best == b.best and a.history == b.history
    assert a.fitness <= _fitness(space.uniform()) and space.executed(a.best) <= 38
    assert [h["stage"] for h in a.history][:2] == [1, 1] and a.history[-1]["stage"] == 2

    calls = []

    def dying(c):
        if len(calls) == 30:
            raise KeyboardInterrupt
        calls.append(c)
        return _fitness(c)

    ckpt = tmp_path / "ad.json"
    with pytest.raises(KeyboardInterrupt):
        Evolution(space, dying, config, ckpt, progress=False).run()
    assert len(json.loads(ckpt.read_text())["scores"]) == 30
    resumed = Evolution(space, _fitness, config, ckpt, progress=False)
    r = resumed.run()
    assert r.best == a.best and r.history == a.history and r.evaluations == a.evaluations
    assert resumed.fresh == a.evaluations - 30  # nothing evaluated twice
    with pytest.raises(UserError, match="another search"):
        Evolution(space, _fitness, EvolutionConfig(seed=4), ckpt, progress=False).run()


def test_fitness_is_pluggable(tiny_unet):
    """``search`` takes any ``candidate -> float``; the named fitnesses are those of bench.evaluation."""
    from baselines.autodiffusion.method import FITNESSES, AutoDiffusionConfig, search
    from bench.models import ModelBundle

    from bench.evaluation.setting import FITNESS_KINDS

    assert set(FITNESSES) == set(FITNESS_KINDS)
    bundle = ModelBundle("tiny", tiny_unet, dict(DDPM_SCHEDULER), (1, 16, 16))
    config = AutoDiffusionConfig(k=4, evolution=EvolutionConfig(population=8, top_k=3, mutation=4, crossover=2,
                                                                epochs=3, stage1_epochs=3, seed=1))
    seen = []

    def fitness(c):
        seen.append(c)
        return _fitness(c)

    result = search(bundle, config, progress=False, fitness=fitness)
    assert seen and result.fitness == min(_fitness(c) for c in seen) and result.evaluations == len(seen)
    assert result.fitness < _fitness(SearchSpace(1000, 4, len(droppable_layers(tiny_unet))).uniform())
    with pytest.raises(UserError, match="unknown AutoDiffusion fitness"):
        search(bundle, AutoDiffusionConfig(fitness="clip"), progress=False)
