"""Per-image similarity to the teacher (PSNR, SSIM, LPIPS: bench.quality.similarity), the bootstrap of a mean, and
the memory probes of a row (bench.cost.memory): values against closed forms derived here in float64, bad input as
one line, LPIPS's weights only from a local file (never downloaded), the metrics in the one vocabulary."""
import math
import sys

import numpy as np
import pytest
import torch

from bench.quality import compute
from bench.quality.bootstrap import bootstrap_mean
from bench.quality.similarity import (LPIPS_BACKBONES, LPIPS_ENV, lpips, lpips_missing, lpips_model, lpips_per_image,
                                      lpips_weights_path, per_image, psnr, psnr_per_image, ssim, ssim_per_image)
from bench.results import METRICS, ROWS
from flexiffusion.errors import UserError


def _images(n=6, c=1, h=16, w=16, seed=0, low=20, high=200):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)


@pytest.fixture
def no_lpips_weights(tmp_path, monkeypatch):
    """LPIPS's backbone file points at a path that is not there; any download attempt fails the test."""
    path = tmp_path / "absent" / "alexnet-owt-7be5be79.pth"
    monkeypatch.setenv(LPIPS_ENV, str(path))

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return path


def test_psnr_of_a_known_offset_is_10_log10_of_one_over_its_mse():
    """Exact in float64 up to torchmetrics' float32 log(10) (relative 5e-8: 2e-6 dB at 48 dB)."""
    a = _images(4, 3)
    offsets = torch.tensor([1, 3, 10, 40], dtype=torch.int64)          # a different offset per image: pairing by index
    b = (a.to(torch.int64) + offsets[:, None, None, None]).to(torch.uint8)
    expected = [10 * math.log10(1 / (k / 255) ** 2) for k in offsets.tolist()]
    assert psnr_per_image(b, a) == pytest.approx(expected, rel=1e-7)
    assert psnr(b, a) == {"psnr_db": pytest.approx(sum(expected) / 4, rel=1e-7), "n_images": 4}
    assert compute("psnr", b, a)["psnr_db"] == pytest.approx(sum(expected) / 4, rel=1e-7)   # through the registry


def test_identical_images_psnr_inf_ssim_one_and_the_mean_says_so():
    a = _images(5)
    assert np.isinf(psnr_per_image(a, a)).all() and psnr(a, a)["psnr_db"] == math.inf
    assert (ssim_per_image(a, a) == 1.0).all() and ssim(a, a)["ssim"] == 1.0
    mixed = a.clone()
    mixed[0, 0, 0, 0] += 1                                                     # one pixel of one image differs
    values = psnr_per_image(mixed, a)
    assert np.isinf(values[1:]).all() and values[0] == pytest.approx(10 * math.log10(255 ** 2 * 256), rel=1e-7)


def test_ssim_of_constant_images_is_its_luminance_term():
    """Constant images have no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * 1)^2."""
    levels = [(100, 120), (30, 200), (255, 0)]
    a = torch.stack([torch.full((3, 16, 16), x, dtype=torch.uint8) for x, _ in levels])
    b = torch.stack([torch.full((3, 16, 16), y, dtype=torch.uint8) for _, y in levels])
    c1 = 0.01 ** 2
    expected = [(2 * (x / 255) * (y / 255) + c1) / ((x / 255) ** 2 + (y / 255) ** 2 + c1) for x, y in levels]
    assert ssim_per_image(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_falls_as_noise_grows():
    a = _images(3, 1, 32, 32)
    g = torch.Generator().manual_seed(1)
    noisy = [(a.double() + s * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 255).round()
             .to(torch.uint8) for s in (2, 8, 32)]
    means = [ssim(x, a)["ssim"] for x in noisy]
    assert 1 > means[0] > means[1] > means[2]


@pytest.mark.parametrize("fn", [psnr, ssim, lpips])
def test_bad_input_is_one_line_naming_problem_and_fix(fn, no_lpips_weights):
    with pytest.raises(UserError) as err:
        fn(_images(4), _images(5))
    assert "has 4 images" in str(err.value) and "5" in str(err.value) and "same seeds" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(UserError, match="differ in image shape"):
        fn(_images(2, 1, 16, 16), _images(2, 3, 16, 16))


def test_ssim_refuses_images_below_its_window():
    with pytest.raises(UserError, match="at least 6 x 6 pixels"):
        ssim(_images(2, 1, 4, 4), _images(2, 1, 4, 4, seed=1))


def test_lpips_without_its_weights_names_the_missing_file_and_downloads_nothing(no_lpips_weights):
    a, b = _images(3), _images(3, seed=1)
    assert lpips_weights_path() == no_lpips_weights
    assert lpips_missing() == f"needs {no_lpips_weights}"
    assert lpips(a, b) == {"lpips": f"needs {no_lpips_weights}", "n_images": 3}   # the text a row stores
    assert per_image(a, b)["lpips"] == f"needs {no_lpips_weights}"
    with pytest.raises(UserError, match=r"LPIPS needs .*alexnet-owt-7be5be79\.pth .*FLEXBENCH_LPIPS_WEIGHTS.*nothing "
                                        r"is downloaded"):
        lpips_per_image(a, b)


def test_lpips_default_path_is_torch_hubs_checkpoint_of_torchvisions_weights(monkeypatch, tmp_path):
    import torchvision.models as tvm

    monkeypatch.delenv(LPIPS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert lpips_weights_path("alex") == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    urls = {"alex": tvm.AlexNet_Weights.DEFAULT.url, "vgg": tvm.VGG16_Weights.DEFAULT.url,
            "squeeze": tvm.SqueezeNet1_1_Weights.DEFAULT.url}
    assert {net: file for net, (_, file) in LPIPS_BACKBONES.items()} == {n: u.rsplit("/", 1)[1] for n, u in urls.items()}
    with pytest.raises(UserError, match="unknown LPIPS network 'resnet'"):
        lpips_weights_path("resnet")


@pytest.fixture
def standin_alexnet(tmp_path, monkeypatch, no_lpips_weights):
    """A torchvision AlexNet checkpoint of random weights (its ``features`` only: what LPIPS reads), as the local
    file LPIPS is told to use."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    path = tmp_path / "alexnet-standin.pth"
    torch.save(state, path)
    monkeypatch.setenv(LPIPS_ENV, str(path))
    return path, state


def test_lpips_reads_the_local_backbone_and_scores_pairs(standin_alexnet):
    path, state = standin_alexnet
    model = lpips_model("alex", resize=64)
    loaded = model.net.state_dict()
    assert loaded.keys() and all(torch.equal(v, state["features." + k.split(".", 1)[1]]) for k, v in loaded.items())
    a, b = _images(3), _images(3, seed=1)
    assert lpips_missing() == ""
    same = lpips_per_image(a, a)
    assert same.shape == (3,) and (same == 0).all()                      # identical images: 0
    other = lpips_per_image(a, b)
    assert (other > 0).all() and lpips(a, b)["lpips"] == pytest.approx(other.mean(), rel=1e-12)
    batched = lpips_per_image(a, b, batch_size=1)                        # per image: the batch does not matter
    assert batched == pytest.approx(other, rel=1e-5, abs=1e-7)


def test_lpips_refuses_a_file_that_is_not_the_backbone(tmp_path, monkeypatch, no_lpips_weights):
    bad = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    monkeypatch.setenv(LPIPS_ENV, str(bad))
    with pytest.raises(UserError, match=r"other\.pth: has another shape for features\.0\.weight: not torchvision's "
                                        "alexnet checkpoint"):
        lpips_model()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"other\.pth: not a readable torchvision alexnet checkpoint"):
        lpips_model()


def test_bootstrap_mean_matches_the_standard_error_and_refuses_inf():
    rng = np.random.default_rng(3)
    values = rng.normal(30.0, 4.0, size=400)
    s = bootstrap_mean(values, b=2000, seed=1)
    assert s.value == pytest.approx(values.mean(), rel=1e-14)
    assert s.sd == pytest.approx(values.std() / math.sqrt(len(values)), rel=0.08)   # the mean's standard error
    assert s.low < s.value < s.high and s.high - s.value == pytest.approx(s.value - s.low, rel=1e-12)
    flat = bootstrap_mean(np.full(10, 0.5), b=20)
    assert (flat.low, flat.value, flat.high, flat.sd) == (0.5, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="finite values"):
        bootstrap_mean([1.0, math.inf], b=20)


def test_the_metrics_are_in_the_one_vocabulary():
    expected = {"psnr_db": ("dB", "higher"), "ssim": ("", "higher"), "lpips": ("", "lower"),
                "peak_memory_mib": ("MiB", "lower"), "cache_kib_per_image": ("KiB", "lower")}
    for name, (unit, better) in expected.items():
        m = METRICS[name]
        assert (m.unit, m.better, m.writers, m.field) == (unit, better, ROWS, False), name
    assert METRICS["psnr_db"].format(math.inf) == "inf" and METRICS["ssim"].format(0.98765) == "0.9877"
    assert METRICS["lpips"].format("needs /x/alexnet-owt-7be5be79.pth") == "needs /x/alexnet-owt-7be5be79.pth"


def test_a_table_cell_of_an_infinite_psnr_is_a_number_of_the_cell_grammar():
    """The teacher's own row (or any row whose images all equal the teacher's) shows PSNR ``inf``, no interval."""
    from reports.cells import with_spread
    from reports.check import CELL_NUMBER

    cell = with_spread("psnr_db", {"psnr_db": math.inf})
    assert cell == "inf" and CELL_NUMBER.match(cell)
    cell = with_spread("psnr_db", {"psnr_db": 37.777, "psnr_db_sd": 0.254})
    assert cell == "37.78 [37.28, 38.27]" and CELL_NUMBER.match(cell)
    assert not CELL_NUMBER.match("nan") and not CELL_NUMBER.match("-inf")


# ---- memory of a row's sampling --------------------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU peak is Linux's VmHWM")
def test_peak_memory_sees_an_allocation_inside_the_block():
    from bench.cost.memory import MIB, PeakMemory

    import mmap

    # 64 MiB of fresh anonymous pages, touched, then unmapped inside the block: the peak must see them.  (A tensor
    # would do in a fresh process, but a long one's allocator may hand back pages that are already resident.)
    with PeakMemory("cpu") as peak:
        block = mmap.mmap(-1, 64 * MIB)
        for offset in range(0, 64 * MIB, mmap.PAGESIZE):
            block[offset] = 1
        block.close()
    assert peak.start_bytes > 0 and peak.peak_bytes - peak.start_bytes >= 63 * MIB
    assert peak.record()["measure"] == "process peak RSS (VmHWM)"
    with PeakMemory("cpu") as again:                                    # reset at the start: the old peak is gone
        pass
    assert again.peak_bytes - again.start_bytes < 63 * MIB


def test_cache_probe_counts_the_features_a_full_step_keeps():
    """DeepCache's cache on the embedded U-Net: the probe's bytes equal the one tensor a full step keeps for
    partial(b) (the engine's read key), found here directly; none for all-full plans."""
    from baselines.deepcache import uniform_plan
    from bench.cost.memory import CacheProbe
    from bench.generate import generate_images
    from bench.models import load_model
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Plan, Step

    bundle = load_model("embedded")
    seeds = [0, 1, 2]
    engine = StepEngine.attach(bundle.unet)
    try:
        x = torch.randn(len(seeds), *bundle.sample_shape)
        with torch.no_grad(), engine.step(Step.full(), keep={3}):
            bundle.unet(x, torch.tensor([500] * len(seeds)), class_labels=torch.zeros(len(seeds), dtype=torch.long))
        kept = engine.cache_state()["contexts"]["default"][engine.read_key(3)]
        expected = kept.numel() * kept.element_size()
    finally:
        engine.detach()
    assert expected > 0
    with CacheProbe(bundle.unet) as probe:
        generate_images(bundle, uniform_plan(4, interval=2, branch=3), seeds, batch_size=3, progress=False)
    assert probe.calls == 4 and probe.max_bytes == expected
    with CacheProbe(bundle.unet) as probe:
        generate_images(bundle, Plan.full(4), seeds, batch_size=3, progress=False)
    assert probe.calls == 4 and probe.max_bytes == 0


def test_similarity_intervals_stay_inside_the_metric_range():
    """A normal interval that leaves the metric's range is clipped there and marked, never shown outside it: SSIM
    above 1, PSNR / LPIPS below 0 (the footnote says why: reports.cells.CLIP_NOTE)."""
    from reports.cells import CLIP_NOTE, CLIPPED, interval, with_spread

    assert interval("ssim", {"ssim": 0.995, "ssim_sd": 0.004}) == pytest.approx((0.995 - 1.96 * 0.004, 1.0), abs=1e-4)
    from reports.check import CELL_NUMBER

    cell = with_spread("ssim", {"ssim": 0.995, "ssim_sd": 0.004})
    assert cell.endswith(f"1.0000{CLIPPED}]") and CELL_NUMBER.match(cell)
    assert with_spread("lpips", {"lpips": 0.01, "lpips_sd": 0.02}).startswith(f"0.0100 [0.0000{CLIPPED},")
    assert CLIPPED not in with_spread("psnr_db", {"psnr_db": 37.0, "psnr_db_sd": 0.3})
    assert "SSIM" in CLIP_NOTE and "never above 1" in CLIP_NOTE
