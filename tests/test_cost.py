"""Cost metrics: MACs in both conventions (parity with the paper and with closed forms), schedule cost,
the latency harness's bookkeeping, the CLI.  Timing targets live in benchmarks/, not here."""
import json
import random

import pytest
import torch
import torch.nn.functional as F

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step
from flexiffusion.threads import num_threads

from bench import presets
from bench.cost import macs
from bench.cost.macs import COMPLETE, PAPER
from bench.cost.schedule_cost import CostModel

# ENGINEERING.md: fraction of a full step's MACs that partial(b) computes, DDPM CIFAR, b = 1..12 (attention counted,
# 3 decimals).
CIFAR_FRACTIONS = [.079, .206, .360, .544, .692, .851, .901, .933, .965, .977, .985, .993]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("macs-cache")


@pytest.fixture(scope="module")
def cifar(cache_dir):
    return macs.preset_table("ddpm-cifar10", cache=cache_dir)


# ---- presets ----------------------------------------------------------------------------------------------------


def test_presets_registry_and_inputs():
    assert set(presets.preset_names()) >= {"ddpm-cifar10", "ddpm-bedroom", "ddpm-church", "ldm-4-g", "sd-v1.5",
                                           "embedded"}
    sample, t, kw = presets.get_preset("sd-v1.5").example_inputs(batch_size=2)
    assert sample.shape == (2, 4, 64, 64) and kw["encoder_hidden_states"].shape == (2, 77, 768)
    sample, t, kw = presets.get_preset("ldm-4-g").example_inputs()
    assert sample.shape == (1, 3, 64, 64) and kw["encoder_hidden_states"].shape == (1, 1, 512)
    sample, t, kw = presets.get_preset("embedded").example_inputs(batch_size=3)
    assert sample.shape == (3, 1, 16, 16) and kw["class_labels"].shape == (3,)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UserError, match="ddpm-cifar10.*sd-v1.5"):
        presets.get_preset("ddpm-imagenet")


def test_cifar_preset_matches_google_ddpm_cifar10():
    built = presets.build("ddpm-cifar10")
    assert round(sum(p.numel() for p in built.unet.parameters()) / 1e6, 2) == 35.75
    assert presets.build("ddpm-cifar10").unet is built.unet  # built once per process
    out = built.unet(built.sample, built.timestep).sample
    assert out.shape == built.sample.shape and torch.isfinite(out).all()


# ---- MACs -------------------------------------------------------------------------------------------------------


def test_cifar_full_step_within_one_percent_of_paper(cifar):
    full = cifar.unet_macs("full", None, PAPER) / 1e9
    assert full == pytest.approx(6.10, rel=0.01)
    assert full == pytest.approx(6.0711, abs=1e-3)  # the known 0.5% gap (docs/costs.md)
    assert cifar.unet_macs("full", None, COMPLETE) / 1e9 == pytest.approx(6.239, abs=1e-3)


def test_paper_convention_is_fvcore_default(cifar):
    from fvcore.nn import FlopCountAnalysis

    built = presets.build("ddpm-cifar10")
    with torch.no_grad(), num_threads(1):
        fa = FlopCountAnalysis(macs.Call(built.unet, "forward", 2, [], {"return_dict": False}),
                               (built.sample, built.timestep))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        default = fa.total()
    assert default == cifar.unet_macs("full", None, PAPER)


def test_cifar_partial_fractions(cifar):
    assert cifar.num_branches == 12
    # complete convention: the figures of ENGINEERING.md (3 decimals)
    for got, want in zip(cifar.fractions(COMPLETE), CIFAR_FRACTIONS):
        assert got == pytest.approx(want, abs=0.001)
    # paper convention: near them (attention missing from numerator and denominator)
    for got, want in zip(cifar.fractions(PAPER), CIFAR_FRACTIONS):
        assert got == pytest.approx(want, abs=0.015)
    fr = cifar.fractions(PAPER)
    assert all(a < b for a, b in zip(fr, fr[1:])) and fr[-1] < 1


def test_null_step_costs_nothing(cifar):
    for conv in macs.CONVENTIONS:
        assert cifar.unet_macs("null", None, conv) == 0
        assert cifar.lookup(conv)[0] == 0


def test_attention_handle_counts_the_closed_form():
    """SDPA with d_qk != d_v: B*heads*Lq*Lk*(d_qk + d_v) MACs under "attention", none in the paper convention.
    The reference is the closed form, not torch's FlopCounterMode, whose answer depends on the host's SDPA kernel
    (it counts 0 for the CPU flash kernel on AVX-512 hosts)."""

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 4, 64, 32), torch.randn(2, 4, 77, 32), torch.randn(2, 4, 77, 48)
    count = macs.count_call(Attn(), (q, k, v))
    assert count.extra["attention"] == 2 * 4 * 64 * 77 * (32 + 48)
    assert count.paper == 0  # fvcore's default counts attention as zero
    assert macs.attention_macs((3, 5, 7), (3, 11, 7), (3, 11, 2)) == 3 * 5 * 11 * (7 + 2)


def test_attention_of_a_diffusers_block_matches_the_closed_form():
    """A real diffusers cross-attention layer: attention = B*heads*Lq*Lk*(d + d); the paper convention counts
    exactly its four projections (B*L*in*out each, bias adds not counted by fvcore)."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=64, heads=4, dim_head=16, cross_attention_dim=32).eval()
    x, ctx = torch.randn(2, 50, 64), torch.randn(2, 7, 32)
    count = macs.count_call(attn, (x,), {"encoder_hidden_states": ctx})
    assert count.extra["attention"] == 2 * 4 * 50 * 7 * (16 + 16)
    q_and_out = 2 * (2 * 50 * 64 * 64)   # to_q, to_out: 64 -> 64 on 2 x 50 tokens
    k_and_v = 2 * (2 * 7 * 32 * 64)      # to_k, to_v: 32 -> 64 on 2 x 7 context tokens
    assert count.paper == q_and_out + k_and_v
    assert count.complete == count.paper + count.extra["attention"]


def test_guidance_doubles_complete_unet_macs_only():
    t = macs.MacsTable("x", 2, True, {"full": (100, 10, 0), "partial:1": (30, 0, 0), "partial:2": (60, 10, 0),
                                      "decoder": (500, 5, 0)})
    assert t.unet_macs("full", None, PAPER) == 90 and t.unet_macs("full", None, COMPLETE) == 200
    assert t.lookup(PAPER) == [0, 30, 50, 90] and t.lookup(COMPLETE) == [0, 60, 120, 200]
    assert t.part_macs("decoder") == 500 and t.part_macs("text_encoder") is None
    rows = {(r.step, r.branch, r.convention): r for r in t.rows()}
    assert rows[("decoder", None, COMPLETE)].fraction_of_full == 2.5
    assert ("decoder", None, PAPER) not in rows


def test_table_cache_is_reused_and_atomic(cifar, cache_dir, monkeypatch):
    files = list(cache_dir.glob("macs/*.json"))
    assert [f.name.startswith("ddpm-cifar10-") for f in files] == [True]
    assert not list(cache_dir.rglob("*.tmp"))
    monkeypatch.setattr(macs, "measure_preset", lambda *a, **k: pytest.fail("cache miss"))
    again = macs.preset_table("ddpm-cifar10", cache=cache_dir)
    assert again.counts == cifar.counts and again.key == macs.cache_key("ddpm-cifar10")


def test_stale_or_corrupt_cache_entry_is_measured_again(tmp_path, monkeypatch):
    fake = macs.MacsTable("embedded", 1, True, {"full": (10, 1, 0), "partial:1": (5, 0, 0)},
                          macs.cache_key("embedded"))
    calls = []
    monkeypatch.setattr(macs, "measure_preset", lambda name, progress=False: calls.append(name) or fake)
    macs.preset_table("embedded", cache=tmp_path)
    (path,) = tmp_path.glob("macs/embedded-*.json")
    path.write_text("{not json")
    macs.preset_table("embedded", cache=tmp_path)
    data = json.loads(path.read_text())
    data["key"]["versions"]["torch"] = "0.0"
    path.write_text(json.dumps(data))
    macs.preset_table("embedded", cache=tmp_path)
    assert calls == ["embedded"] * 3
    macs.preset_table("embedded", cache=tmp_path)
    assert len(calls) == 3


def test_csv_and_plot(cifar, tmp_path):
    import csv

    path = macs.write_csv([cifar], tmp_path / "macs.csv")
    rows = list(csv.DictReader(open(path)))
    assert tuple(rows[0]) == macs.CSV_COLUMNS
    assert len(rows) == 2 * (cifar.num_branches + 2)
    full = [r for r in rows if r["step"] == "full" and r["convention"] == "paper"][0]
    assert float(full["macs_g"]) == pytest.approx(6.0711, abs=1e-3) and float(full["fraction_of_full"]) == 1.0
    png = macs.plot_branches([cifar, cifar], tmp_path / "fig.png")
    assert png.stat().st_size > 10_000


def test_unknown_convention_and_branch(cifar):
    with pytest.raises(UserError, match="convention"):
        cifar.unet_macs("full", None, "flops")
    with pytest.raises(UserError, match="branch 13 out of range"):
        cifar.unet_macs("partial", 13)


# ---- schedule cost ----------------------------------------------------------------------------------------------


def test_all_full_plan_costs_full_macs_and_speedup_one(cifar):
    model = CostModel.from_table(cifar)
    cost = model.cost(Plan.full(100))
    assert cost.avg_macs == cifar.unet_macs("full") and cost.speedup == 1.0
    assert cost.nfe == 100 and cost.steps == 100


def test_paper_table2_deepcache_rows(cifar):
    """Table 2 (CIFAR-10, 100 DDIM steps): DeepCache-B/C/D = uniform intervals 5/10/20 at the paper's branch 2
    (DeepCache's DDPM ``--branch 2``), which is our partial(3) (``engine_branch(2) == 3``, tests/test_deepcache.py):
    avg MACs 3.01 / 2.63 / 2.42 G."""
    model = CostModel.from_table(cifar)
    for interval, want in ((5, 3.01), (10, 2.63), (20, 2.42)):
        assert model.cost(uniform_plan(100, interval, 3)).avg_macs_g == pytest.approx(want, rel=0.01)


def test_null_steps_count_in_the_grid_not_in_nfe(cifar):
    model = CostModel.from_table(cifar)
    plan = Plan.from_tokens(["f", "n", "p2", "n"])
    cost = model.cost(plan)
    assert cost.nfe == 2 and cost.steps == 4
    assert cost.total_macs == cifar.unet_macs("full") + cifar.unet_macs("partial", 2)
    assert cost.avg_macs == cost.total_macs / 4
    assert cost.speedup == pytest.approx(4 * cifar.unet_macs("full") / cost.total_macs)


def test_lookup_agrees_with_direct_computation(cifar):
    """The lookup total of random plans equals summing the table entry of each step, and tracing the plan's
    steps one after another through the step engine (the cache of each full step feeding what follows)."""
    from flexiffusion.engine import StepEngine

    model = CostModel.from_table(cifar)
    rng = random.Random(0)
    for _ in range(20):
        steps = [Step.full()] + [rng.choice([Step.full(), Step.null()] + [Step.partial(b) for b in range(1, 13)])
                                 for _ in range(rng.randrange(1, 60))]
        plan = Plan(tuple(steps))
        direct = sum(cifar.unet_macs(s.kind, s.branch) for s in plan.steps)
        assert model.total_macs(plan) == direct

    plan = Plan.from_tokens(["f", "p1", "n", "p7", "f", "p12"])
    built = presets.build("ddpm-cifar10")
    engine = StepEngine.attach(built.unet)
    traced = 0
    try:
        with num_threads(1):
            for step in plan.steps:
                if step.evaluates:
                    with engine.step(step):
                        traced += macs.count_call(built.unet, (built.sample, built.timestep),
                                                  static={"return_dict": False}).paper
    finally:
        engine.detach()
    assert model.total_macs(plan) == traced


def test_plan_for_another_model_is_a_user_error(cifar):
    model = CostModel.from_table(cifar)
    with pytest.raises(UserError, match="branch 18 out of range.*1..12"):
        model.cost(uniform_plan(10, 2, 18))  # a LSUN (B = 18) plan
    with pytest.raises(UserError, match="empty plan"):
        model.avg_macs(Plan(()))


def test_complete_cost_counts_parts_per_image():
    t = macs.MacsTable("sd", 1, True, {"full": (100, 10, 0), "partial:1": (30, 0, 0), "text_encoder": (7, 1, 0),
                                       "decoder": (50, 2, 0)})
    model = CostModel.from_table(t, COMPLETE)
    cost = model.cost(Plan.full(3))
    assert cost.total_macs == 3 * 200 and cost.extra_macs == 2 * 7 + 50 and cost.image_macs == 664
    assert CostModel.from_table(t, PAPER).cost(Plan.full(3)).extra_macs == 0


# ---- latency harness (bookkeeping only: no timing assertions) -----------------------------------------------------


def test_measurement_summaries_against_hand_computed_values():
    from bench.cost.latency import Measurement

    m = Measurement("plan:x", None, batch_size=2, values=[4.0, 1.0, 3.0, 2.0], calls=4)
    assert (m.median, m.q1, m.q3, m.iqr, m.mean) == (2.5, 1.75, 3.25, 1.5, 2.5)  # numpy.percentile's linear rule
    assert (m.per_image, m.per_step) == (1.25, 0.625)
    assert Measurement("one", None, 1, [0.5]).iqr == 0.0


def _report(case, env, series: dict):
    from bench.cost.latency import LatencyReport, Measurement

    return LatencyReport(case, env, [Measurement(n, b, case.batch_size, list(v)) for (n, b), v in series.items()])


def test_engine_overhead_paired_and_unpaired():
    from bench.cost.latency import LatencyCase, engine_overhead

    report = _report(LatencyCase("embedded"), {}, {("native", None): [1.0, 2.0, 4.0], ("full", None): [1.1, 4.4, 4.2]})
    # paired: median of 1.1, 2.2, 1.05 = 1.1; unpaired: median(full) 4.2 / median(native) 2.0 = 2.1
    assert engine_overhead(report) == pytest.approx(0.1)
    assert engine_overhead(report, paired=False) == pytest.approx(1.1)


def test_latency_report_on_embedded_model():
    from bench.cost.latency import LatencyCase, measure_steps

    case = LatencyCase("embedded", batch_size=2, threads=1, warmup=1, repeats=3, branches=(1, 9))
    with num_threads(2):
        report = measure_steps(case)
        assert torch.get_num_threads() == 2  # the case's thread count is scoped to the run
    names = [(m.name, m.branch) for m in report.measurements]
    assert names == [("native", None), ("full", None), ("partial", 1), ("partial", 9)]
    for m in report.measurements:
        assert len(m.values) == 3 and all(v > 0 for v in m.values) and m.batch_size == 2
    env = report.environment
    assert env["unet_batch"] == 4 and env["threads"] == 1 and env["torch"] == torch.__version__.split("+")[0]
    assert env["device"] == "cpu" and "diffusers" in env and "git_commit" in env
    flat = report.to_dict(flat=True)
    assert flat["case.batch_size"] == 2 and flat["partial.9.n"] == 3 and flat["env.threads"] == 1
    assert flat["full.median_s"] == sorted(report.get("full").values)[1]
    assert len(report.to_dataframe()) == 4


def test_latency_never_moves_or_casts_the_shared_preset_unet():
    """A case in another dtype runs a private copy: the process-wide preset U-Net stays float32, same storage."""
    from bench.cost.latency import LatencyCase, measure_plans, measure_steps

    shared = presets.get_preset("embedded").build_unet()
    before = {k: (v.dtype, v.device, v.data_ptr(), v.clone()) for k, v in shared.state_dict().items()}
    case = LatencyCase("embedded", batch_size=1, threads=1, dtype="bfloat16", warmup=0, repeats=1, branches=(2,))
    measure_steps(case)
    measure_plans(case, [Plan.from_tokens(["f", "p2"])])
    assert presets.get_preset("embedded").build_unet() is shared
    for k, v in shared.state_dict().items():
        dtype, device, ptr, value = before[k]
        assert (v.dtype, v.device, v.data_ptr()) == (dtype, device, ptr) and torch.equal(v, value), k
    assert not shared._forward_hooks and not shared._forward_pre_hooks  # the engine detached


def test_latency_of_a_plan_uses_the_sampler():
    from bench.cost.latency import LatencyCase, measure_plans

    plans = [Plan.full(4, name="full4"), Plan.from_tokens(["f", "p2", "n", "p9"], name="mixed")]
    report = measure_plans(LatencyCase("embedded", batch_size=2, threads=1, warmup=0, repeats=2), plans)
    assert [m.name for m in report.measurements] == ["plan:full4", "plan:mixed"]
    assert all(len(m.values) == 2 and m.calls == 4 for m in report.measurements)
    assert report.environment["scheduler"] == "ddim" and report.environment["guidance"] is True


def _traced_macs(name: str, tokens: list[str]) -> int:
    """Paper-convention MACs of a plan traced step by step through the engine (independent of the cost model)."""
    from flexiffusion.engine import StepEngine

    built = presets.build(name)
    engine = StepEngine.attach(built.unet)
    try:
        total = 0
        for step in Plan.from_tokens(tokens).steps:
            if step.evaluates:
                with engine.step(step):
                    total += macs.count_call(built.unet, (built.sample, built.timestep), built.kwargs,
                                             static={"return_dict": False}).paper
    finally:
        engine.detach()
    return total


def test_cost_figures_runs_and_its_mac_speedup_matches_a_traced_plan(tmp_path, monkeypatch):
    from bench.evaluation.cost_figures import cost_figures, format_figures

    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path))
    fig = cost_figures("embedded", batch_size=1, threads=1, steps=4, interval=2, branches=(1,), repeats=2, warmup=0)
    (row,) = fig["plans"]
    assert row["plan"] == "uniform-4-N2-b1" and row["nfe"] == 4
    full = _traced_macs("embedded", ["f"])
    assert row["mac_speedup"] == pytest.approx(4 * full / _traced_macs("embedded", ["f", "p1", "f", "p1"]), rel=1e-12)
    assert fig["partial"][1]["mac_fraction"] == pytest.approx(_traced_macs("embedded", ["f", "p1"]) / full - 1)
    assert len(fig["raw"]["plans"]["measurements"]) == 2 and all(
        len(m["values"]) == 2 for m in fig["raw"]["plans"]["measurements"])
    assert "engine overhead" in format_figures(fig) and list(tmp_path.glob("macs/embedded-*.json"))


def test_cost_figures_arithmetic_on_known_timings(monkeypatch):
    """Timings replaced by known values: every figure is checked against a hand-computed number."""
    from bench.evaluation import cost_figures as figures
    from bench.cost.latency import LatencyCase
    from flexiffusion.environment import environment

    case, env = LatencyCase("embedded", batch_size=1), environment()
    steps = _report(case, env, {("native", None): [1.0, 2.0, 1.0], ("full", None): [1.10, 2.04, 1.03],
                                ("partial", 1): [0.3, 0.8, 0.4]})
    plans = _report(case, env, {("plan:full-4", None): [4.0, 8.0, 4.0], ("plan:uniform-4-N2-b1", None): [2.0, 2.0, 1.0]})
    monkeypatch.setattr(figures, "measure_steps", lambda *a, **k: steps)
    monkeypatch.setattr(figures, "measure_plans", lambda *a, **k: plans)
    fig = figures.cost_figures("embedded", steps=4, interval=2, branches=(1,))
    assert fig["engine_overhead"] == pytest.approx(0.03)             # median of 1.10, 1.02, 1.03, minus 1
    assert fig["engine_overhead_unpaired"] == pytest.approx(0.10)    # 1.10 / 1.0 - 1
    assert fig["partial"][1]["wall_fraction"] == pytest.approx(0.4 / 1.03)  # median of 0.273, 0.392, 0.388
    (row,) = fig["plans"]
    assert row["wall_speedup"] == pytest.approx(4.0)                 # median of 2, 4, 4
    assert row["wall_speedup_unpaired"] == pytest.approx(2.0)        # 4.0 / 2.0
    assert row["wall_over_mac"] == pytest.approx(4.0 / row["mac_speedup"])
    assert fig["full_plan_median_s"] == 4.0 and row["median_s"] == 2.0 and row["iqr_s"] == pytest.approx(0.5)


def test_latency_bad_inputs():
    from bench.cost.latency import LatencyCase, measure_steps

    with pytest.raises(UserError, match="batch size"):
        LatencyCase("embedded", batch_size=0).validate()
    with pytest.raises(UserError, match="out of range"):
        measure_steps(LatencyCase("embedded", batch_size=1, threads=1, repeats=1, warmup=0, branches=(10,)))
    with pytest.raises(UserError, match="unknown preset"):
        measure_steps(LatencyCase("nope"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            LatencyCase("embedded", device="cuda").validate()


# ---- CLI --------------------------------------------------------------------------------------------------------


def test_macs_command_prints_both_conventions_and_writes_outputs(cifar, cache_dir, tmp_path, capsys):
    from bench.cli import main

    assert main(["macs", "--preset", "ddpm-cifar10", "--cache", str(cache_dir), "--csv", str(tmp_path),
                 "--plot", str(tmp_path / "b1.png")]) == 0
    out = capsys.readouterr().out
    assert "paper: 6.1 G" in out and "6.0711" in out and "partial(12)" in out and "complete G" in out
    assert (tmp_path / "macs.csv").is_file() and (tmp_path / "b1.png").is_file()
    assert (tmp_path / "macs-ddpm-cifar10.csv").read_text() == (tmp_path / "macs.csv").read_text()


@pytest.mark.parametrize("argv,needle", [
    (["macs", "--preset", "nope"], "unknown model 'nope'"),
    (["latency", "--model", "nope"], "unknown model 'nope'"),
    (["latency", "--preset", "embedded", "--branches", "1,x"], "malformed --branches"),
    (["latency", "--preset", "embedded", "--plan", "uniform:10:x:1"], "malformed plan spec"),
    (["latency", "--preset", "embedded", "--batch", "0"], "batch size"),
    (["cost-figures", "--branches", "none"], "at least one branch"),
])
def test_cost_commands_bad_input(argv, needle, capsys):
    from bench.cli import main

    assert main(argv) == 2
    assert needle in capsys.readouterr().err


# ---- the paper's other architectures ------------------------------------------------------------------------
# One fvcore trace of a full step each: LDM-4-G (the approximated architecture) ~10 s in the default run; LSUN and
# SD ~20 s each on a quiet 2-core machine (minutes under load, 3.4 GB for SD): -m slow.

PAPER_FULL = {"ddpm-bedroom": 248.7, "ldm-4-g": 99.82, "sd-v1.5": 338.76}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "ldm-4-g" else pytest.mark.slow)
                                  for n in sorted(PAPER_FULL)])
def test_paper_full_step_within_one_percent(name):
    built = presets.build(name)
    with num_threads(1):
        count = macs.count_call(built.unet, (built.sample, built.timestep), built.kwargs,
                                static={"return_dict": False})
    assert count.paper / 1e9 == pytest.approx(PAPER_FULL[name], rel=0.01)
    presets.clear_cache()


@pytest.mark.slow
def test_sd_text_encoder_and_decoder():
    sd = presets.get_preset("sd-v1.5")
    ids = torch.zeros((1, 77), dtype=torch.long)
    with num_threads(1):
        text = macs.count_call(sd.build_part("text_encoder"), (ids,), static={"return_dict": False})
        vae = macs.count_call(sd.build_part("decoder"), (torch.randn(1, 4, 64, 64),), method="decode",
                              static={"return_dict": False})
    assert text.complete / 1e9 == pytest.approx(6.65, rel=0.01)
    assert vae.complete / 1e9 == pytest.approx(1257, rel=0.01)
    presets.clear_cache()
