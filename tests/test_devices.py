"""Devices on a CPU-only machine, with honest stand-ins for CUDA.

What these tests can show without a GPU: the device names the suite accepts and refuses (``torch.cuda`` queries
monkeypatched), that the timer synchronises the device around every timed call (the hook counted; the CUDA branch
run with stand-in events), that every random draw behind the sampler's inputs is made on the CPU by CPU generators
whatever the target device (``meta`` stands in for CUDA: same code path, a non-CPU device, no values), and that MAC
counts are unchanged.  What they cannot show: CUDA kernels, real synchronisation, or that a CUDA copy of the noise
is exact -- ``benchmarks/gpu_check.py`` checks those on a GPU (docs/gpu.md)."""
import pytest
import torch

from flexiffusion import devices
from flexiffusion.devices import resolve_device, synchronize
from flexiffusion.errors import UserError
from flexiffusion.seeds import STEP_NOISE, generators, noise_for_seeds, stream_seed


@pytest.fixture
def cuda(monkeypatch):
    """A stand-in machine with ``n`` CUDA devices (``cuda(n)``; 0: no CUDA)."""
    def make(n: int, current: int = 0):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    return make


# ---- resolve_device ---------------------------------------------------------------------------------------------


def test_cpu_and_auto_without_cuda(cuda):
    cuda(0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_names_with_cuda(cuda):
    cuda(2, current=1)
    assert resolve_device("auto") == torch.device("cuda", 1)   # the current device, with its index
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "cuda:-1", "cpu:cuda", "nvidia"])
def test_unparsable_names(cuda, name):
    cuda(1)
    with pytest.raises(UserError) as e:
        resolve_device(name)
    assert "unknown device" in _one_line(e) and "cuda:N" in str(e.value)


@pytest.mark.parametrize("name", ["mps", "meta", "xpu", "xla"])
def test_unsupported_device_types(cuda, name):
    cuda(1)
    with pytest.raises(UserError) as e:
        resolve_device(name)
    assert "not supported" in _one_line(e) and "--device cpu" in str(e.value)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_requested_without_cuda(cuda, name):
    cuda(0)
    with pytest.raises(UserError) as e:
        resolve_device(name)
    assert "CUDA is not available" in _one_line(e) and "use --device cpu" in str(e.value)


def test_cuda_index_that_does_not_exist(cuda):
    cuda(1)
    with pytest.raises(UserError) as e:
        resolve_device("cuda:3")
    assert _one_line(e) == "cuda:3 requested, this machine has 1 CUDA device: use cuda:0"
    cuda(4)
    with pytest.raises(UserError, match=r"^cuda:4 requested, this machine has 4 CUDA devices: use cuda:0 \.\. cuda:3$"):
        resolve_device("cuda:4")


def test_latency_case_resolves_its_device(cuda):
    from bench.cost.latency import LatencyCase

    cuda(1)
    with pytest.raises(UserError, match="this machine has 1 CUDA device"):
        LatencyCase("embedded", device="cuda:3").validate()
    assert LatencyCase("embedded", device="cuda").torch_device == torch.device("cuda", 0)
    cuda(0)
    with pytest.raises(UserError, match="CUDA is not available"):
        LatencyCase("embedded", device="cuda").validate()
    assert LatencyCase("embedded", device="auto").torch_device == torch.device("cpu")


# ---- synchronize, strict float32 -----------------------------------------------------------------------------------


def test_synchronize_is_a_no_op_on_the_cpu_and_waits_on_cuda(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    synchronize("cpu")
    synchronize(torch.device("cpu"))
    assert seen == []
    synchronize("cuda:1")
    assert seen == [torch.device("cuda", 1)]


def test_strict_float32_switches_tf32_off_and_restores():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = True
    try:
        with devices.strict_float32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[0], before[1]
        torch.set_float32_matmul_precision(before[2])


def test_describe_cpu():
    d = devices.describe("cpu")
    assert d["device"] == "cpu" and isinstance(d["device_name"], str) and "tf32_matmul" not in d


# ---- the timer synchronises around every timed call -----------------------------------------------------------------


def test_timer_synchronises_before_the_start_and_after_the_call():
    from bench.cost.timing import Timer

    log = []
    timer = Timer("cpu", sync=lambda: log.append("sync"))
    assert timer(lambda: log.append("call")) >= 0 and log == ["sync", "call", "sync"]
    assert timer.kind == "perf_counter"


def test_timer_cuda_branch_with_stand_in_events(monkeypatch):
    """The CUDA branch, run on the CPU with stand-ins: sync, start event, call, stop event, sync; events on the
    device's current stream; the value is the events' elapsed time in seconds."""
    from bench.cost import timing

    log = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self, stream=None):
            assert stream == "stream-of-cuda:0"
            self.at = len(log)
            log.append("record")

        def elapsed_time(self, other):
            return 250.0   # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream-of-{device}")
    monkeypatch.setattr(timing, "synchronize", lambda device: log.append(f"sync {device}"))
    timer = timing.Timer("cuda:0")
    assert timer(lambda: log.append("call")) == pytest.approx(0.25)
    assert log == ["sync cuda:0", "record", "call", "record", "sync cuda:0"]
    assert timer.kind == "cuda-events"


def test_step_latency_synchronises_every_timed_repeat(monkeypatch):
    from bench.cost import timing
    from bench.cost.latency import LatencyCase, measure_steps

    synced = []
    monkeypatch.setattr(timing, "synchronize", lambda device: synced.append(str(device)))
    case = LatencyCase("embedded", batch_size=1, threads=1, warmup=1, repeats=2, branches=(1,))
    report = measure_steps(case)
    # (warm-up + repeats) rounds x (native, full, partial(1)) timed calls x (before the start, after the call)
    assert synced == ["cpu"] * (3 * 3 * 2)
    assert all(len(m.values) == 2 for m in report.measurements)   # warm-up unchanged: not recorded
    env = report.environment
    assert env["timer"] == "perf_counter" and env["device"] == "cpu" and env["device_name"]


def test_plan_latency_synchronises_every_timed_repeat(monkeypatch):
    from bench.cost import timing
    from bench.cost.latency import LatencyCase, measure_plans
    from flexiffusion.schedule import Plan

    synced = []
    monkeypatch.setattr(timing, "synchronize", lambda device: synced.append(str(device)))
    plans = [Plan.full(2, name="full2"), Plan.from_tokens(["f", "p1"], name="fp")]
    report = measure_plans(LatencyCase("embedded", batch_size=1, threads=1, warmup=1, repeats=2), plans)
    assert synced == ["cpu"] * ((1 + 2) * 2 * 2)
    assert [len(m.values) for m in report.measurements] == [2, 2] and report.environment["timer"] == "perf_counter"


# ---- MACs do not move with the device --------------------------------------------------------------------------------


def test_macs_unchanged(tmp_path):
    """The embedded preset's counts (total, attention, cdist) as measured before the device work; presets are
    counted on the CPU (the shared preset U-Net is never moved), so no device enters the count."""
    from bench.cost.macs import preset_table

    table = preset_table("embedded", cache=tmp_path)
    assert table.counts["full"] == (97667072, 2654208, 0)
    assert table.counts["partial:1"] == (7938048, 0, 0)
    assert table.counts["partial:3"] == (35667968, 0, 0)
    assert table.num_branches == 9


# ---- device-independent noise --------------------------------------------------------------------------------


@pytest.fixture
def draws(monkeypatch):
    """Every ``torch.randn`` call: (device argument, generator device, the values drawn)."""
    seen = []
    real = torch.randn

    def randn(*args, **kwargs):
        out = real(*args, **kwargs)
        g = kwargs.get("generator")
        seen.append((torch.device(kwargs.get("device") or "cpu").type, None if g is None else g.device.type,
                     out.detach().clone()))
        return out

    monkeypatch.setattr(torch, "randn", randn)
    return seen


def test_initial_noise_is_drawn_on_the_cpu_whatever_the_device(draws):
    seeds, shape = [3, 11, 7], (1, 4, 4)
    on_cpu = noise_for_seeds(seeds, shape)
    cpu_draws = [d[2] for d in draws]
    draws.clear()
    on_meta = noise_for_seeds(seeds, shape, device="meta")   # a non-CPU device: only the final copy goes there
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape and on_meta.dtype == on_cpu.dtype
    assert [(d[0], d[1]) for d in draws] == [("cpu", "cpu")] * 3
    assert all(torch.equal(a, b[2]) for a, b in zip(cpu_draws, draws))
    assert torch.equal(torch.cat(cpu_draws), on_cpu)


def test_generators_refuse_a_device():
    assert all(g.device.type == "cpu" for g in generators([1, 2], STEP_NOISE))
    with pytest.raises(UserError, match="generators live on the CPU"):
        generators([1], device="cuda")


def test_step_noise_is_drawn_on_the_cpu_for_a_device_model_output(draws):
    """DDIM at eta = 1 with the harness's per-sample CPU generators: diffusers' randn_tensor draws on the CPU and
    moves the noise to the model output's device (meta here), the same values as for a CPU model output."""
    from flexiffusion.schedulers import make_scheduler_for_grid

    from bench.presets import DDPM_SCHEDULER

    out = {}
    for dev in ("cpu", "meta"):
        sched = make_scheduler_for_grid("ddim", dict(DDPM_SCHEDULER), 10)
        x, eps = torch.zeros(2, 1, 4, 4, device=dev), torch.ones(2, 1, 4, 4, device=dev)
        draws.clear()
        y = sched.step(eps, sched.timesteps[0], x, eta=1.0, generator=generators([3, 4], STEP_NOISE),
                       return_dict=False)[0]
        assert y.device.type == dev
        assert [(d[0], d[1]) for d in draws] == [("cpu", "cpu")] * 2
        out[dev] = [d[2] for d in draws]
    assert all(torch.equal(a, b) for a, b in zip(out["cpu"], out["meta"]))


def test_sample_batches_hands_the_sampler_the_same_noise_on_every_device(monkeypatch):
    """What the batched loop hands the sampler for seeds on a CPU bundle and on a bundle whose device is ``meta``
    (the U-Net stays on the CPU; the sampler is a spy): the same noise values before the copy, CPU step-noise
    generators seeded per sample, and the noise on the bundle's device."""
    from bench import generate
    from bench.models import load_model
    from flexiffusion.schedule import Plan
    from flexiffusion.state import SamplerState

    bundle = load_model("embedded")
    seeds, plan = [5, 0, 9], Plan.full(3)
    handed, cpu_copies = {}, {}
    real_noise = generate.noise_for_seeds

    def noise_spy(chunk, shape, dtype=torch.float32, device="cpu"):
        from flexiffusion.seeds import cpu_noise

        cpu_copies.setdefault(str(device), []).append(cpu_noise(chunk, shape, dtype))
        return real_noise(chunk, shape, dtype=dtype, device=device)

    def sampler_spy(denoiser, sched, plan, noise, cond=None, *, state=None, stop=None, step_kwargs=None, **kw):
        handed.setdefault(noise.device.type, []).append((noise, dict(step_kwargs)))
        return SamplerState(len(plan), torch.zeros(noise.shape), {}, {}, None, tuple(plan.tokens()), {}, None)

    monkeypatch.setattr(generate, "noise_for_seeds", noise_spy)
    monkeypatch.setattr(generate, "sample", sampler_spy)
    generate.sample_batches(bundle, plan, seeds, eta=1.0, batch_size=2)
    monkeypatch.setattr(type(bundle), "device", property(lambda self: torch.device("meta")))
    generate.sample_batches(bundle, plan, seeds, eta=1.0, batch_size=2)

    assert [n.device.type for n, _ in handed["cpu"]] == ["cpu", "cpu"]
    assert [n.device.type for n, _ in handed["meta"]] == ["meta", "meta"]
    assert [n.shape for n, _ in handed["meta"]] == [n.shape for n, _ in handed["cpu"]]
    # the values drawn for the meta bundle, before the copy, are the CPU bundle's noise exactly
    assert all(torch.equal(a, b) for a, b in zip(cpu_copies["meta"], [n for n, _ in handed["cpu"]]))
    for dev in ("cpu", "meta"):
        gens = [g for _, kw in handed[dev] for g in kw["generator"]]
        assert [g.device.type for g in gens] == ["cpu"] * 3
        assert [g.initial_seed() for g in gens] == [stream_seed(s, STEP_NOISE) for s in seeds]


# ---- benchmarks/gpu_check.py without a GPU ------------------------------------------------------------------------


def _gpu_check():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module   # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_check_plans_are_valid_on_both_models():
    gpu_check = _gpu_check()
    for steps in (10, 20, 50, 100):
        for _, plan, _ in gpu_check.plans(steps):
            plan.validate(9, steps)    # the embedded U-Net has 9 branches, CIFAR-10's 12
    flex = gpu_check.flex_like(20)
    assert "n" in flex.tokens() and flex.nfe == 12


def test_gpu_check_without_cuda_prints_one_table_and_says_so(tmp_path, capsys, cuda):
    cuda(0)
    gpu_check = _gpu_check()
    out = tmp_path / "check.md"
    assert gpu_check.main(["--quick", "--skip", "a,b,c,d", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("| check | case | device |") == 1 and "no CUDA device: GPU rows not measured" in text
    assert out.read_text() == text
