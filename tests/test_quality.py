"""Quality metrics: invariants (FID(A, A) = 0, symmetry, batch-size independence), parity with independent
implementations (scipy sqrtm Fréchet distance, scipy Kendall's tau, a direct CLIP computation), the rFID teacher
cache, and bad input (one UserError, nothing cached).  Stand-ins keep it fast: a random-projection extractor."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from flexiffusion.errors import UserError
from bench.quality import (RelativeFID, TeacherSpec, available_extractors, class_consistency, compute, fidelity,
                           kendall_tau, mse)
from bench.quality.extractors import Extractor
from bench.quality.features import FeatureSet
from bench.quality.images import as_images
from quality_standins import FEATURE_DIM, random_images, register

EX = register()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache; nothing is ever written under the home directory."""
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cached_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


A = random_images(120, seed=0)
B = random_images(150, seed=1, high=180)  # darker: a different distribution


def frechet_scipy(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Independent Fréchet distance: float64 numpy moments and scipy.linalg.sqrtm."""
    x1, x2 = f1.double().numpy(), f2.double().numpy()
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ---- FID / KID / PRC / IS ------------------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    assert abs(fidelity(A, A, extractor=EX)["fid"]) < 1e-8
    ab, ba = fidelity(A, B, extractor=EX)["fid"], fidelity(B, A, extractor=EX)["fid"]
    assert ab > 1e-3
    assert ab == pytest.approx(ba, rel=1e-9)


def test_fid_matches_an_independent_frechet_distance():
    ex = Extractor(EX)
    f1 = FeatureSet(as_images(A), ex, ["feat"]).features("feat")
    f2 = FeatureSet(as_images(B), ex, ["feat"]).features("feat")
    assert f1.shape == (120, FEATURE_DIM)
    assert fidelity(A, B, extractor=EX)["fid"] == pytest.approx(frechet_scipy(f1, f2), rel=1e-6)


def test_all_metrics_do_not_depend_on_batch_size(_cache):
    metrics = ("fid", "kid", "prc", "isc")
    small = fidelity(A, B, metrics, extractor=EX, batch_size=7, cache=False)
    large = fidelity(A, B, metrics, extractor=EX, batch_size=64, cache=False)
    assert small.keys() == large.keys() >= {"fid", "kid_mean", "kid_std", "precision", "recall", "f_score",
                                            "isc_mean", "isc_std", "n_images", "n_reference"}
    # Float32 features extracted in different blocks differ in the last bits. Measured over batch sizes 1, 7, 16,
    # 64, 150 (stand-in extractor): FID 4.3e-8, kid_mean 3.4e-7, IS 1.2e-8 relative; kid_std 2.1e-8 absolute (1.5e-5
    # relative: a small difference of float32 quantities); precision/recall exact. Tolerance: rel 1e-5 (>= 30x the
    # relative noise) or abs 2e-7 (10x the absolute noise), whichever is looser.
    for k in small:
        assert small[k] == pytest.approx(large[k], rel=1e-5, abs=2e-7), k
    assert small["n_images"] == 120 and small["n_reference"] == 150
    assert cached_files(_cache) == []  # cache=False writes nothing


def test_reference_features_and_statistics_are_cached_under_their_key(_cache, monkeypatch):
    calls = []
    original = Extractor.extract
    monkeypatch.setattr(Extractor, "extract", lambda self, images, *a, **k: calls.append(images.n) or original(self, images, *a, **k))
    first = fidelity(A, B, ("fid", "kid"), extractor=EX, reference_source="darker")
    assert calls == [120, 150]
    files = cached_files(_cache)
    assert any(f.startswith("stats-fid/darker-test-proj-feat-150-") for f in files)
    assert any(f.startswith("features/darker-test-proj-feat-150-") for f in files)
    assert not any(f.endswith(".tmp") for f in files)  # atomic writes leave no temporaries
    calls.clear()
    assert fidelity(A, B, ("fid", "kid"), extractor=EX, reference_source="darker") == first
    assert calls == [120]  # the reference came from the cache
    calls.clear()
    fidelity(A, B[:149], ("fid",), extractor=EX, reference_source="darker")
    assert calls == [120, 149]  # another image count (and content) is another key


def test_folders_give_the_same_result_as_tensors(tmp_path):
    from PIL import Image

    for name, images in (("a", A[:40]), ("b", B[:50])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img[0].numpy(), mode="L").save(tmp_path / name / f"{i:04d}.png")
    from_folders = fidelity(str(tmp_path / "a"), str(tmp_path / "b"), ("fid", "prc"), extractor=EX)
    from_tensors = fidelity(A[:40], B[:50], ("fid", "prc"), extractor=EX)
    assert from_folders == pytest.approx(from_tensors, rel=1e-12)


def test_cli_fid_on_folders(tmp_path, capsys):
    from PIL import Image
    from bench.cli import main

    for name, images in (("a", A[:20]), ("b", B[:20])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img[0].numpy(), mode="L").save(tmp_path / name / f"{i:04d}.png")
    out = tmp_path / "r.json"
    rc = main(["fid", "--input1", str(tmp_path / "a"), "--input2", str(tmp_path / "b"), "--extractor", EX,
               "--metrics", "fid,kid", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 20 and result["fid"] > 0 and "kid_mean" in result
    assert "fid:" in capsys.readouterr().out
    assert main(["fid", "--input1", str(tmp_path / "a"), "--input2", str(tmp_path / "missing"), "--extractor", EX]) == 2
    assert "error:" in capsys.readouterr().err


# ---- rFID --------------------------------------------------------------------------------------------------------

def stand_in_generator(seeds, calls):
    """plan = noise level: image i is a seed-i base image plus plan-scaled seed-i noise (float in [0, 1])."""
    def generate(plan):
        calls.append(plan)
        out = []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            base, noise = torch.rand(1, 16, 16, generator=g), torch.randn(1, 16, 16, generator=g)
            level = 0.0 if not isinstance(plan, float) else plan
            out.append((base + level * noise).clamp(0, 1))
        return torch.stack(out)
    return generate


def spec(seeds=range(64)) -> TeacherSpec:
    return TeacherSpec(model_id="stand-in", weights_hash="0" * 8, scheduler="ddim", grid_length=10, seeds=tuple(seeds))


def test_teacher_is_generated_once_and_reused_from_the_cache(_cache):
    calls = []
    gen = stand_in_generator(range(64), calls)
    rfid = RelativeFID(gen, spec(), extractor=EX)
    same = rfid(0.0)  # the candidate identical to the teacher
    assert len(calls) == 2  # teacher + candidate
    assert abs(same["rfid"]) < 1e-8 and same["mse"] == 0.0 and same["n_images"] == 64
    worse, worst = rfid(0.1), rfid(0.3)
    assert 0 < worse["rfid"] < worst["rfid"] and 0 < worse["mse"] < worst["mse"]
    assert set(rfid.timings) == {"sampling_s", "features_s", "distance_s"}

    calls.clear()
    again = RelativeFID(gen, spec(), extractor=EX)  # a new process would see the same cache
    assert again(0.1) == worse
    assert len(calls) == 1  # only the candidate was sampled: the teacher came from the cache
    assert any(f.startswith("teacher-images/") for f in cached_files(_cache))

    calls.clear()
    RelativeFID(gen, spec(range(1, 65)), extractor=EX).teacher_images()  # other seeds: another teacher
    assert len(calls) == 1


def test_the_default_teacher_plan_is_all_full_on_the_base_grid():
    from flexiffusion.schedule import Plan

    calls = []
    RelativeFID(stand_in_generator(range(8), calls), spec(range(8)), extractor=EX).teacher_images()
    assert calls == [Plan.full(10)]


def test_rfid_rejects_a_candidate_with_another_image_count(_cache):
    rfid = RelativeFID(stand_in_generator(range(16), []), spec(range(16)), extractor=EX)
    rfid.teacher_images()
    with pytest.raises(UserError, match="returned 8 images for 16 seeds"):
        rfid.score_images(torch.zeros(8, 1, 16, 16, dtype=torch.uint8))


# ---- MSE, Kendall's tau, class consistency, CLIP score -----------------------------------------------------------

def test_mse_on_the_unit_scale():
    a = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 255
    assert mse(a, b) == {"mse": pytest.approx(1 / 48), "n_images": 3}


def test_kendall_tau_equals_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=1.0, size=30)
    y[:5] = y[5]  # ties: tau-b
    ref = scipy.stats.kendalltau(x, y)
    out = kendall_tau(x, y)
    assert out == {"kendall_tau": pytest.approx(ref.statistic, abs=1e-15), "p_value": pytest.approx(ref.pvalue, abs=1e-15),
                   "n_candidates": 30}
    assert kendall_tau([1, 2, 3], [3, 2, 1])["kendall_tau"] == pytest.approx(-1.0)


def test_class_consistency_counts_requested_classes():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 4, 4)
    classifier = lambda x: torch.nn.functional.one_hot(x[:, 0, 0, 0].long() % 3, 3).float()  # class = value % 3
    out = class_consistency(images, [0, 1, 2, 0, 0, 0], classifier, batch_size=4)
    assert out == {"class_consistency": pytest.approx(4 / 6), "n_images": 6}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("clip") / "tiny-clip-test.json"
    path.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)
    from bench.quality import ClipScorer

    torch.manual_seed(2)  # random weights whose cosines have both signs (the clamp at 0 is exercised)
    with pytest.warns(UserWarning, match="random weights"):
        return ClipScorer("tiny-clip-test", pretrained=None, device="cpu", batch_size=3)


def test_clip_score_on_a_tiny_random_model_matches_a_direct_computation(tiny_clip):
    from PIL import Image

    images = random_images(7, seed=3, shape=(3, 20, 24))
    prompts = ["a photo of a cat", "a dog", "x", "y", "z", "seven", "a red car"]
    out = tiny_clip(images, prompts)
    assert 0.0 <= out["clip_score"] <= 100.0 and out["n_images"] == 7
    model, tok = tiny_clip.model, tiny_clip.tokenizer
    cos = []
    with torch.no_grad():  # one pair at a time, straight through open_clip
        for img, prompt in zip(images, prompts):
            x = tiny_clip.preprocess(Image.fromarray(img.permute(1, 2, 0).numpy())).unsqueeze(0)
            cos.append(torch.nn.functional.cosine_similarity(model.encode_image(x), model.encode_text(tok([prompt]))).item())
    assert min(cos) < 0 < max(cos)
    assert out["clip_score"] == pytest.approx(float(np.mean([100 * max(c, 0) for c in cos])), rel=1e-5)


def test_missing_clip_weights_name_the_file():
    from bench.quality.clip_score import resolve_clip_weights

    with pytest.raises(UserError, match="open_clip_pytorch_model.bin"):
        resolve_clip_weights("ViT-B-32", "laion2b_s34b_b79k")


# ---- registry and bad input --------------------------------------------------------------------------------------

def test_registry_validates_names_and_results_are_flat_with_a_count():
    with pytest.raises(UserError, match="valid: .*fid.*kendall_tau"):
        compute("FID-50k")
    assert compute("fid", A, B, extractor=EX)["n_images"] == 120
    assert compute("isc", A, extractor=EX)["n_images"] == 120
    assert compute("mse", A[:5], A[:5]) == {"mse": 0.0, "n_images": 5}
    assert compute("kendall_tau", [1, 2, 3], [1, 2, 3])["n_candidates"] == 3


BAD_INPUTS = [
    (lambda: fidelity(A, random_images(10, 0, shape=(1, 8, 8)), extractor=EX), "differ in image shape"),
    (lambda: fidelity(A, random_images(10, 0, shape=(3, 16, 16)), extractor=EX), r"\(1, 16, 16\) vs \(3, 16, 16\)"),
    (lambda: fidelity(A, B[:1], extractor=EX), "FID needs at least 2 images; input2 has 1"),
    (lambda: fidelity(A, B[:3], ("prc",), extractor=EX), "PRC needs at least 4 images"),
    (lambda: fidelity(A[:5], None, ("isc",), extractor=EX), "ISC needs at least 10 images"),
    (lambda: fidelity(A, B, ("fid", "lpips"), extractor=EX), "unknown fidelity metric"),
    (lambda: fidelity(A, B, extractor="no-such-net"), "valid: .*test-proj"),
    (lambda: fidelity(A, A[:, :, :, :8].float().div(255).index_fill(0, torch.tensor([3, 17]), float("nan")), extractor=EX),
     r"NaN or inf pixels in image\(s\) 3, 17"),
    (lambda: fidelity(A[:, :, :2].float().index_fill(0, torch.tensor([5]), float("inf")), B, extractor=EX),
     r"input1: NaN or inf pixels in image\(s\) 5"),
    (lambda: fidelity(torch.zeros(4, 16, 16), B, extractor=EX), "4-d"),
    (lambda: RelativeFID(lambda plan: torch.full((4, 1, 16, 16), float("nan")), spec(range(4)), extractor=EX)(0.1),
     r"teacher: NaN or inf pixels in image\(s\) 0, 1, 2, 3"),
    (lambda: spec([1]), "at least 2 images"),
    (lambda: kendall_tau([1, 2, 3], [1, 2]), "same candidates"),
    (lambda: kendall_tau([1, 2, 3], [float("nan"), 1, 2]), "index 0"),
]


@pytest.mark.parametrize("call, message", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_bad_input_is_one_user_error_and_caches_nothing(call, message, _cache):
    with pytest.raises(UserError, match=message):
        call()
    assert cached_files(_cache) == []


def test_inception_without_its_weights_names_the_file(_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match="weights-inception-2015-12-05-6726825d.pth.*pt_inception-2015-12-05"):
        fidelity(A, B, extractor="inception-v3-compat")
    assert "inception-v3-compat" in available_extractors()
    assert cached_files(_cache) == []


def test_fewer_images_than_feature_dimensions_warns_that_fid_is_biased():
    with pytest.warns(UserWarning, match=f"10 images in {FEATURE_DIM} feature dimensions.*more than {FEATURE_DIM}"):
        assert fidelity(A[:10], B[:10], extractor=EX, cache=False)["fid"] > 0


@pytest.mark.filterwarnings("ignore:FID statistics of 4 images")
def test_rfid_for_a_bundle_uses_the_real_generator_with_the_teachers_seeds():
    from bench.evaluation import relative_fid
    from bench.models import load_model
    from flexiffusion.schedule import Plan

    rfid = relative_fid(load_model("tiny-ddpm"), range(4), 2, extractor=EX)
    assert rfid.teacher.model_id == "tiny-ddpm" and rfid.teacher.grid_length == 2
    same = rfid(Plan.full(2))
    assert same["mse"] == 0.0 and abs(same["rfid"]) < 1e-6  # same seeds -> the teacher's images exactly
    assert rfid(Plan.from_tokens(["f", "n"]))["mse"] > 0
    with pytest.raises(UserError, match="3 steps, the teacher's base grid 2"):
        rfid(Plan.full(3))


@pytest.fixture(scope="module")
def digits_cnn_weights(tmp_path_factory):
    """The shipped digits-cnn weights when installed, else a random-weight file of the same architecture."""
    from bench.embedded.loader import WEIGHTS_DIR

    shipped = WEIGHTS_DIR / "classifier.safetensors"
    if shipped.is_file():
        return None
    from safetensors.torch import save_file
    from bench.embedded.classifier import DigitClassifier

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("digits") / "classifier.safetensors"
    save_file(DigitClassifier().state_dict(), str(path))
    return str(path)


def test_digits_cnn_separates_real_digits_from_noise(digits_cnn_weights, _cache):
    from bench.quality.sources import digits_uint8

    train, heldout = digits_uint8("train")[:400], digits_uint8("heldout")
    noise = random_images(360, seed=5)
    real = fidelity(heldout, train, ("fid", "prc"), extractor="digits-cnn", weights_path=digits_cnn_weights,
                    reference_source="digits-train-400")
    fake = fidelity(noise, train, ("fid", "prc"), extractor="digits-cnn", weights_path=digits_cnn_weights,
                    reference_source="digits-train-400")
    assert real["n_images"] == 360 and real["n_reference"] == 400
    assert 0 < real["fid"] < fake["fid"] and real["precision"] > fake["precision"]
    assert len([f for f in cached_files(_cache) if f.startswith("stats-fid/digits-train-400-digits-cnn")]) == 1


def test_inception_weights_are_found_locally_and_grayscale_is_repeated_to_rgb(_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    weights = _cache / "weights" / "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's name is accepted too
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    ex = Extractor("inception-v3-compat", cuda=False)
    assert ex.weights_path == str(weights)
    assert ex.layer_for("fid") == "2048" and ex.layer_for("isc") == "logits_unbiased"
    rgb = ex.adapt(as_images(A[:2]), channels=1)
    assert rgb[1].shape == (3, 16, 16) and torch.equal(rgb[1][2], A[1][0])


def test_fingerprints_follow_the_weights():
    from bench.cache import module_fingerprint

    assert Extractor(EX).fingerprint == Extractor(EX).fingerprint
    net = torch.nn.Linear(3, 2)
    before, sampled = module_fingerprint(net), module_fingerprint(net, sample=2)
    with torch.no_grad():
        net.bias[-1] += 1  # the last value: inside the sampled part too
    assert module_fingerprint(net) != before and module_fingerprint(net, sample=2) != sampled
