"""Candidate evaluation: fast FID vs torch-fidelity, prefix reuse bit-identical to sampling from noise, the state
store, the picklable setting, the fitness kinds, per-plan extras (AutoDiffusion)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bench.evaluation.evaluator import Evaluator, PlanExtras, boundaries, resume_needs
from bench.evaluation.frechet import FixedReferenceFID, psd_sqrt
from bench.evaluation.setting import EvaluationSetting, ExecutionMode
from bench.evaluation.states import StateStore
from bench.generate import generate_images
from bench.quality.features import fid_statistics
from bench.quality.fidelity import fid_from_statistics
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

GRID, N, BATCH = 10, 8, 4  # two batches, so states are kept per batch
PLANS = ["f p2 n f p3 p3 f n n n",   # from noise
         "f p2 n f p3 p3 f p1 n n",   # shares 6 tokens: resumes before its third segment
         "f p2 n f n n f n f n",      # shares 3 tokens
         "f p2 n f p3 p3 f n n n",    # a duplicate: resumes at its last segment
         "f f f f f f f f f f"]       # the teacher


def plans():
    return [Plan.from_tokens(p.split()) for p in PLANS]


@pytest.fixture(scope="module")
def setting():
    return EvaluationSetting.for_images(N, grid_length=GRID, batch_size=BATCH, threads=1)


@pytest.fixture(scope="module")
def evaluator(setting, tmp_path_factory):
    return Evaluator(setting, cache_dir=tmp_path_factory.mktemp("cache")).prepare()


# ---- Fréchet distance against fixed statistics ------------------------------------------------------------------
def _features(n, d, zero, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g).abs()
    other = (base + 0.3 * torch.randn(n, d, generator=g)).abs()
    base[:, :zero] = 0  # like digits-cnn, whose 64 of 128 ReLU units never fire
    other[:, :zero] = 0
    return base, other


@pytest.mark.parametrize("n,d,zero", [(250, 128, 64), (1000, 128, 64), (200, 256, 0), (600, 256, 0)])
def test_fixed_reference_fid_equals_torch_fidelity(n, d, zero):
    """Same value as torch-fidelity's eigvals-based formula to 1e-6 relative (measured: <= 2e-7, in the singular
    n < d case; about 1e-14 otherwise)."""
    ref_feats, cand_feats = _features(n, d, zero, seed=n + d)
    ref, cand = fid_statistics(ref_feats), fid_statistics(cand_feats)
    expected = fid_from_statistics(cand, ref)
    fid = FixedReferenceFID(ref)
    assert fid(cand) == pytest.approx(expected, rel=1e-6)
    assert fid.from_features(cand_feats) == pytest.approx(expected, rel=1e-6)


def test_psd_sqrt_and_fid_of_itself():
    a, _ = _features(300, 64, 0, seed=1)
    stats = fid_statistics(a)
    root = psd_sqrt(stats["sigma"])
    np.testing.assert_allclose(root @ root, stats["sigma"], atol=1e-10)
    assert abs(FixedReferenceFID(stats).from_features(a)) < 1e-8  # FID(A, A) = 0 up to float64 round-off


# ---- the setting ------------------------------------------------------------------------------------------------
def test_setting_is_picklable_and_keyed_by_everything(setting):
    clone = pickle.loads(pickle.dumps(setting))
    assert clone == setting and clone.key() == setting.key()
    others = [EvaluationSetting.for_images(N, **{"grid_length": GRID, "batch_size": BATCH, "threads": 1, **kw}) for kw in
              ({"fitness": "mse"}, {"mode": ExecutionMode(dtype="bf16")}, {"mode": ExecutionMode(channels_last=True)},
               {"batch_size": 8}, {"guidance": 2.0}, {"scheduler": "dpm2"}, {"first_seed": 1},
               {"threads": 2}, {"real": "digits-all"})]
    keys = {s.key() for s in others} | {setting.key()}
    assert len(keys) == len(others) + 1


@pytest.mark.parametrize("kwargs,match", [({"fitness": "lpips"}, "unknown fitness"), ({"seeds": (1,)}, "2 distinct"),
                                          ({"seeds": (1, 1)}, "2 distinct"), ({"threads": 0}, "threads"),
                                          ({"mode": {"dtype": "fp16"}}, "dtype")])
def test_setting_bad_input(kwargs, match):
    with pytest.raises(UserError, match=match):
        EvaluationSetting(**kwargs)


# ---- prefix reuse -----------------------------------------------------------------------------------------------
def test_boundaries_and_needs():
    p = Plan.from_tokens("f p2 n f p3 p3 f n n n".split())
    assert boundaries(p) == [3, 6, 10] and boundaries(p, 3) == [6, 10]
    assert resume_needs(p, 4) == {3} and resume_needs(p, 3) == frozenset() and resume_needs(p, 7) == frozenset()


def test_teacher_is_the_harness_generator(evaluator, setting):
    from flexiffusion.threads import num_threads

    teacher = evaluator.teacher().teacher_images().tensor()
    # same thread count as the evaluator (threads=1): on some hosts (seen on an AMD EPYC 2-core machine) 1 and 2
    # threads give convolutions that differ in the last bits, which can flip a uint8 pixel
    with num_threads(setting.threads):
        direct = generate_images(evaluator.bundle, Plan.full(GRID), list(setting.seeds), batch_size=BATCH,
                                 progress=False)
    assert torch.equal(teacher, direct)
    assert evaluator.evaluate([Plan.full(GRID)])[0]["mse"] == 0.0


def test_prefix_reuse_is_bit_identical_to_sampling_from_noise(setting, tmp_path):
    ev = Evaluator(setting, cache_dir=tmp_path)
    fast = [ev.images(p) for p in plans()]
    naive = [ev.images(p, reuse=False) for p in plans()]
    for (img_f, info_f), (img_n, info_n) in zip(fast, naive):
        assert torch.equal(img_f, img_n)
        assert info_n["resumed_at"] == 0
    assert [i["resumed_at"] for _, i in fast] == [0, 6, 3, 6, 0]
    assert fast[1][1]["unet_image_steps"] == 2 * N < naive[1][1]["unet_image_steps"] == 7 * N
    values_fast = [r["fitness"] for r in ev.evaluate(plans())]
    values_naive = [r["fitness"] for r in ev.evaluate(plans(), reuse=False)]
    assert values_fast == values_naive  # exactly: the stored value of a candidate equals a recomputed one


def test_kept_branches_let_partial_steps_resume(setting, tmp_path):
    """Without kept features a plan with a partial step right at a stored boundary samples from noise; with the
    space's branches kept it resumes there, still bit-identical."""
    parent, child = (Plan.from_tokens(t.split()) for t in ("f p2 n f p3 p3 f n n n", "f p2 n p2 n n f n n n"))
    assert resume_needs(child, 3) == {2}
    plain = Evaluator(setting, cache_dir=tmp_path)
    plain.images(parent)
    assert plain.images(child)[1]["resumed_at"] == 0
    kept = Evaluator(setting, cache_dir=tmp_path, cache_branches=range(1, 10))
    kept.images(parent)
    img, info = kept.images(child)
    assert info["resumed_at"] == 3 and torch.equal(img, plain.images(child, reuse=False)[0])


def test_state_store_lru_budget_and_disk(setting, tmp_path):
    ev = Evaluator(setting, cache_dir=tmp_path, states=None)
    reference = [ev.images(p, reuse=False)[0] for p in plans()]
    one = Evaluator(setting, cache_dir=tmp_path)
    one.images(plans()[0])
    per_entry = one.states.bytes // len(one.states)
    small = StateStore(budget_bytes=per_entry, directory=tmp_path / "states")  # room for one entry
    ev.states = small
    for p, ref in zip(plans(), reference):
        assert torch.equal(ev.images(p)[0], ref)
    assert len(small) == 1 and small.bytes <= per_entry
    assert small.stats["evictions"] > 0 and small.stats["disk_writes"] > 0 and small.stats["disk_reads"] > 0
    memory_only = StateStore(budget_bytes=per_entry)
    ev.states = memory_only
    ev.images(plans()[0])  # keeps the state before step 3, then the one before step 6 evicts it
    assert len(memory_only) == 1 and ev.images(plans()[2])[1]["resumed_at"] == 0


def test_plan_length_must_match_the_grid(evaluator):
    with pytest.raises(UserError, match="base grid"):
        evaluator.evaluate([Plan.full(GRID + 1)])


# ---- fitness kinds ----------------------------------------------------------------------------------------------
def test_fid_against_real_data_and_mse(tmp_path):
    from bench.quality import fidelity
    from bench.quality.sources import resolve_input

    s = EvaluationSetting.for_images(N, grid_length=GRID, batch_size=BATCH, threads=1, fitness="fid")
    ev = Evaluator(s, cache_dir=tmp_path)
    plan = Plan.from_tokens(PLANS[0].split())
    out = ev.evaluate([plan])[0]
    images, _ = ev.images(plan, reuse=False)
    real, label = resolve_input("digits-train", "real")
    expected = fidelity(images, real.tensor(), ("fid",), reference_source=None, cache=False)["fid"]
    assert out["fitness"] == out["fid"] == pytest.approx(expected, rel=1e-6) and "mse" not in out
    m = EvaluationSetting.for_images(N, grid_length=GRID, batch_size=BATCH, threads=1, fitness="mse")
    out = Evaluator(m, cache_dir=tmp_path).evaluate([plan])[0]
    assert out["fitness"] == out["mse"] > 0 and "rfid" in out


def test_rfid_equals_relative_fid_of_the_quality_package(evaluator, setting, tmp_path):
    from bench.evaluation import relative_fid

    plan = Plan.from_tokens(PLANS[2].split())
    from flexiffusion.threads import num_threads

    with num_threads(setting.threads):  # the evaluator's thread count (see the test above)
        rfid = relative_fid(evaluator.bundle, setting.seeds, GRID, gen_batch_size=BATCH, cache_dir=tmp_path)
        expected = rfid(plan)
    out = evaluator.evaluate([plan])[0]
    # 8 images in 128 dimensions: rank-7 covariances, where torch-fidelity's non-symmetric eigvals carries round-off
    # of its ~120 zero eigenvalues (measured 5e-6 relative here; <= 2e-7 at n >= 250, test above)
    assert out["rfid"] == pytest.approx(expected["rfid"], rel=1e-4) and out["mse"] == expected["mse"]
    assert out["nfe"] == plan.nfe and out["n_images"] == N
    assert all(out[k] >= 0 for k in ("sampling_s", "features_s", "distance_s", "io_s"))


def test_plan_extras_run_autodiffusion_candidates(evaluator, setting):
    """A scheduler factory and a layer-drop hook per plan: AutoDiffusion's candidates run on the same machinery."""
    from baselines.autodiffusion.candidate import Candidate
    from baselines.autodiffusion.sampling import dropping, generate_candidate, subset_scheduler

    cand = Candidate.make([(900, {0, 3}), (600, ()), (300, {1}), (0, ())])
    extras = PlanExtras(tag=cand.key(), scheduler=subset_scheduler(cand.timesteps),
                        hook=lambda unet: dropping(unet, cand))
    plan = Plan.full(len(cand.timesteps))
    images, _ = evaluator.images(plan, extras)
    assert torch.equal(images, generate_candidate(evaluator.bundle, cand, list(setting.seeds), BATCH))
    assert evaluator.evaluate([plan], [extras])[0]["fitness"] > 0


# ---- execution options ------------------------------------------------------------------------------------------
def _mode_check(mode, tmp_path):
    s = EvaluationSetting.for_images(N, grid_length=GRID, batch_size=BATCH, threads=1, mode=mode)
    ev = Evaluator(s, cache_dir=tmp_path)
    teacher, candidate = ev.evaluate([Plan.full(GRID), Plan.from_tokens(PLANS[0].split())])
    assert teacher["mse"] == 0.0  # the teacher runs in the same mode as the candidates
    return candidate


@pytest.mark.parametrize("mode", [ExecutionMode(channels_last=True), ExecutionMode(dtype="bf16")],
                         ids=lambda m: m.label)
def test_execution_modes_run_teacher_and_candidates_alike(mode, evaluator, tmp_path):
    out = _mode_check(mode, tmp_path)
    eager = evaluator.evaluate([Plan.from_tokens(PLANS[0].split())])[0]
    assert out["fitness"] > 0 and eager["fitness"] > 0


@pytest.mark.slow
def test_compiled_blocks_run_with_partial_steps(tmp_path):
    """torch.compile of the U-Net's blocks under the step engine (minutes of compilation on 2 CPU cores)."""
    assert _mode_check(ExecutionMode(compile=True), tmp_path)["fitness"] > 0
