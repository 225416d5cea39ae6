"""Quality references checked before any sampling (bench.quality.reference): every refusal is one fast UserError
line naming the file and the flag; folders, statistics files and named sources resolve; FID against a statistics
file written by ``save_statistics`` equals FID against the folder it came from; a row measured against a statistics
file has FID and says why precision / recall are missing; setting keys stay what they were without the new fields
and follow the file content (not the path) with them."""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.quality import reference as refmod
from bench.quality.reference import (NEEDS_REAL_IMAGES, STATISTICS_NOTE, QualityReference, check_reference,
                                     file_identity, resolve_real, save_statistics)
from bench.quality.statistics import ReferenceStatistics, write_statistics
from flexiffusion.errors import UserError

GRAY = (1, 16, 16)
DIGITS = QualityReference("digits-all", "digits-cnn")
CLASSIFIER = "bench/embedded/weights/classifier.safetensors"   # the shipped digits-cnn weights (safetensors)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_images(folder, n, size=(16, 16), mode="L", seed=0, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for i in range(start, start + n):
        arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(folder / f"{i:05d}.png")
    return folder


# ---- refusals: one line, fast -----------------------------------------------------------------------------------
def _real(value):
    return lambda tmp: replace(DIGITS, real=str(value(tmp)))


def _stats(**arrays):
    def make(tmp):
        np.savez(tmp / "stats.npz", **arrays)
        return tmp / "stats.npz"
    return make


def _bad_state_dict(tmp):
    (tmp / "w.pt").write_bytes(b"not a torch file")
    return replace(DIGITS, extractor_weights=str(tmp / "w.pt"))


def _prompts(data: bytes):
    def make(tmp):
        (tmp / "prompts.txt").write_bytes(data)
        return replace(DIGITS, prompts_file=str(tmp / "prompts.txt"))
    return make


D128 = {"mu": np.zeros(128), "sigma": np.eye(128)}
REFUSALS = [  # (id, reference(tmp), check_reference kwargs, words the one line must hold)
    ("missing folder", _real(lambda t: t / "nope"), {}, ["--real", "nope", "no such", "--real DIR"]),
    ("empty folder", _real(lambda t: (t / "empty").mkdir() or t / "empty"), {}, ["--real", "empty", "no images"]),
    ("wrong resolution", _real(lambda t: write_images(t / "small", 3, size=(8, 8))), {},
     ["--real", "00000.png", "8x8", "16x16"]),
    ("wrong channels", _real(lambda t: write_images(t / "rgb", 3, mode="RGB")), {},
     ["--real", "00000.png", "3 channels", "1 channel"]),
    ("alpha refused", _real(lambda t: write_images(t / "rgba", 3, mode="RGBA")), {}, ["--real", "RGBA", "RGB"]),
    ("not an image", _real(lambda t: write_images(t / "junk", 2) and (t / "junk" / "00009.png").write_bytes(b"x")
                                      and t / "junk"), {}, ["--real", "00009.png", "not a readable image"]),
    ("source of another shape", lambda t: DIGITS, {"image_shape": (3, 32, 32)}, ["--real digits-all", "32x32"]),
    ("no real", lambda t: replace(DIGITS, real=None), {}, ["--real DIR", "--real FILE.npz"]),
    ("neither folder nor npz", _real(lambda t: (t / "x.txt").write_text("a") and t / "x.txt"), {},
     ["--real", "x.txt", "FILE.npz"]),
    ("stats wrong dim", _real(_stats(mu=np.zeros(5), sigma=np.eye(5))), {}, ["stats.npz", "5-d", "128-d", "digits-cnn"]),
    ("stats missing sigma", _real(_stats(mu=np.zeros(128))), {}, ["stats.npz", "lacks sigma", "save_statistics"]),
    ("stats bad sigma", _real(_stats(mu=np.zeros(128), sigma=np.eye(127))), {}, ["stats.npz", "(127, 127)"]),
    ("stats NaN", _real(_stats(mu=np.full(128, np.nan), sigma=np.eye(128))), {}, ["stats.npz", "NaN"]),
    ("stats of another extractor", _real(_stats(**D128, extractor=np.array("test-proj"))), {},
     ["stats.npz", "'test-proj'", "--extractor test-proj"]),
    ("stats of another image size", _real(_stats(**D128, image_shape=np.array([3, 32, 32]))), {},
     ["stats.npz", "32x32"]),
    ("not an npz", _real(lambda t: (t / "fake.npz").write_text("hello") and t / "fake.npz"), {},
     ["--real", "fake.npz", "not an .npz"]),
    ("missing npz", _real(lambda t: t / "gone.npz"), {}, ["--real", "gone.npz", "does not exist"]),
    ("missing extractor weights", lambda t: replace(DIGITS, extractor_weights=str(t / "w.safetensors")), {},
     ["--extractor-weights", "w.safetensors", "does not exist"]),
    ("extractor weights not a state dict", _bad_state_dict, {}, ["--extractor-weights", "w.pt", "state dict"]),
    ("unknown extractor", lambda t: replace(DIGITS, extractor="nope-net"), {}, ["--extractor nope-net", "unknown"]),
    ("empty prompts", _prompts(b"\n  \n\t\n"), {"text": True}, ["--prompts", "prompts.txt", "no prompt"]),
    ("prompts not utf-8", _prompts(b"a cat\n\xff\xfe dog\n"), {"text": True}, ["--prompts", "prompts.txt", "UTF-8"]),
    ("missing prompts", lambda t: replace(DIGITS, prompts_file=str(t / "p.txt")), {"text": True},
     ["--prompts", "p.txt", "does not exist"]),
    ("prompts for a class model", _prompts(b"a cat\n"), {}, ["--prompts", "takes no text"]),
    ("missing CLIP file", lambda t: replace(DIGITS, clip_model="ViT-B-32", clip_pretrained=str(t / "clip.bin")),
     {"text": True}, ["--clip-pretrained", "clip.bin", "does not exist"]),
]


@pytest.fixture(scope="module")
def warm():
    """Imports (torch-fidelity, PIL plugins) once, so the timings below are the checks' own."""
    check_reference(DIGITS, GRAY, text=False)
    refmod.check_extractor("digits-cnn")
    from bench.quality.extractors import _registry

    _registry()


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_every_refusal_is_one_line_naming_file_and_fix(case, tmp_path, warm):
    _, make, kwargs, words = case
    ref = make(tmp_path)
    kwargs = {"image_shape": GRAY, "text": False, **kwargs}
    t0 = time.perf_counter()
    with pytest.raises(UserError) as err:
        check_reference(ref, kwargs.pop("image_shape"), **kwargs)
    elapsed = time.perf_counter() - t0
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_inception_without_weights_names_the_file_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"weights-inception-2015-12-05-6726825d.pth.*--extractor-weights") as err:
        check_reference(QualityReference("digits-all", "inception-v3-compat"), GRAY, text=False)
    assert "\n" not in str(err.value)


# ---- happy paths --------------------------------------------------------------------------------------------------
def test_a_folder_resolves_and_a_large_one_is_sampled(tmp_path, monkeypatch):
    folder = write_images(tmp_path / "real", 30)
    checked = check_reference(replace(DIGITS, real=str(folder)), GRAY, text=False)
    assert (checked.real_kind, checked.real_count, checked.real_path) == ("folder", 30, str(folder.resolve()))
    assert checked.real == str(folder) and checked.weights_file is None and checked.feature_dim == 128
    assert not checked.statistics and checked.prompts is None and checked.clip_model is None

    monkeypatch.setattr(refmod, "HEADER_CHECK_ALL", 10)
    monkeypatch.setattr(refmod, "HEADER_CHECK_FIRST", 4)
    monkeypatch.setattr(refmod, "HEADER_CHECK_RANDOM", 3)
    checked = check_reference(replace(DIGITS, real=str(folder)), GRAY, text=False)
    assert checked.real_count == 30 and "the first 4 and 3 at random of 30" in checked.notes[0]
    write_images(folder, 1, size=(8, 8), start=2)    # among the first ones: always checked
    with pytest.raises(UserError, match="00002.png is 8x8"):
        check_reference(replace(DIGITS, real=str(folder)), GRAY, text=False)


def test_named_sources_are_known_without_loading_them():
    from bench.quality.images import as_images
    from bench.quality.sources import SOURCES, source_info

    for name in SOURCES:
        images = as_images(SOURCES[name](), name)
        assert source_info(name) == (images.shape, images.n)
    checked = check_reference(DIGITS, GRAY, text=False)
    assert (checked.real_kind, checked.real_label, checked.real_count) == ("source", "digits-all", 1797)


def test_known_extractor_dimensions_match_the_extractors():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from bench.quality.extractors import KNOWN_EXTRACTORS, Extractor
    from bench.quality.reference import _dummy_dim

    ex = Extractor("digits-cnn", cuda=False)
    assert refmod.fid_dim_of(ex) == ("features", 128) and _dummy_dim(ex, "features") == 128
    inception = FEATURE_EXTRACTORS_REGISTRY["inception-v3-compat"]
    spec = KNOWN_EXTRACTORS["inception-v3-compat"]
    assert inception.get_default_feature_layer_for_metric("fid") == spec.fid_layer == str(spec.fid_dim)


def test_prompts_file_and_clip_weights(tmp_path):
    (tmp_path / "p.txt").write_bytes("\ufeffa red cat \n\n  a digit 7\n".encode())
    torch.save({"w": torch.zeros(2)}, tmp_path / "clip.pt")
    ref = replace(DIGITS, prompts_file=str(tmp_path / "p.txt"), clip_model="ViT-B-32",
                  clip_pretrained=str(tmp_path / "clip.pt"))
    checked = check_reference(ref, GRAY, text=True)
    assert checked.prompts == ("a red cat", "a digit 7") and checked.clip_weights == str(tmp_path / "clip.pt")
    own = check_reference(replace(ref, clip_model=None, clip_pretrained=None), GRAY, text=True)
    assert own.clip_weights is None and any("own scoring CLIP" in n for n in own.notes)
    with pytest.raises(UserError, match=r"--clip-pretrained no-such-tag: .*tags:") as err:
        check_reference(replace(ref, clip_pretrained="no-such-tag"), GRAY, text=True)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--clip-model nope-clip: unknown open_clip model"):
        check_reference(replace(ref, clip_model="nope-clip"), GRAY, text=True)


# ---- FID from a statistics file -----------------------------------------------------------------------------------
def test_fid_from_saved_statistics_equals_fid_from_the_folder(tmp_path):
    from bench.quality import fidelity

    real = write_images(tmp_path / "real", 200, seed=1)
    generated = torch.from_numpy(np.random.default_rng(2).integers(0, 200, (150, *GRAY), dtype=np.uint8))
    path = save_statistics(real, "digits-cnn", tmp_path / "real.npz")
    checked = check_reference(replace(DIGITS, real=str(path)), GRAY, text=False)
    assert checked.statistics and (checked.feature_dim, checked.real_count) == (128, 200)
    assert STATISTICS_NOTE in checked.notes[0]
    with_folder = fidelity(generated, real, ("fid", "isc"), extractor="digits-cnn", cache=False)
    with_stats = fidelity(generated, str(path), ("fid", "isc"), extractor="digits-cnn", cache=False)
    # measured: difference exactly 0.0 over 3 random sets (the same features, batches and float64 statistics; the
    # .npz round trip is exact); the tolerance only allows for another summation order
    assert with_stats["fid"] == pytest.approx(with_folder["fid"], rel=1e-9, abs=1e-9) and with_stats["fid"] > 0
    assert with_stats["isc_mean"] == with_folder["isc_mean"] and with_stats["n_reference"] == 200
    with pytest.raises(UserError, match="PRC need the real images' features, not a statistics file"):
        fidelity(generated, str(path), ("fid", "prc"), extractor="digits-cnn")
    stats, label = resolve_real(str(path))
    assert isinstance(stats, ReferenceStatistics) and label == "stats-real"
    assert stats.meta == {"extractor": "digits-cnn", "layer": "features", "n_images": 200, "image_shape": GRAY}


def test_bootstrap_against_statistics_resamples_generated_images_only():
    from bench.quality.bootstrap import bootstrap_fid, bootstrap_fid_statistics

    g = np.random.default_rng(0)
    x, y = g.normal(size=(300, 6)), g.normal(0.2, 1.0, size=(400, 6))
    ref = {"mu": y.mean(0), "sigma": np.cov(y, rowvar=False)}
    fixed = bootstrap_fid_statistics(x, ref, b=50)
    both = bootstrap_fid(x, y, b=50, resample_reference=False)
    assert fixed.value == pytest.approx(both.value, rel=1e-9) and fixed.sd == pytest.approx(both.sd, rel=1e-9)


@pytest.mark.filterwarnings("ignore:FID statistics of 10 images")
def test_a_row_against_a_statistics_file_has_fid_and_says_why_precision_is_missing(tmp_path):
    from baselines.registry import Context, Experiment
    from bench.models import load_model
    from bench.results import fmt
    from bench.rows import RowSetting, as_record, measure
    from bench.store import ResultStore
    from reports.cells import with_spread

    g = np.random.default_rng(0)
    f = g.normal(size=(300, 128)).clip(0)
    path = write_statistics(tmp_path / "real.npz", f.mean(0), np.cov(f, rowvar=False), extractor="digits-cnn")
    bundle = load_model("tiny-ddpm")   # a small random U-Net: the row's code path, fast
    setting = RowSetting(n_images=10, teacher_steps=1, batch_size=10, real=str(path))
    with ResultStore(tmp_path / "results.sqlite") as store:
        run = Experiment.from_dict({"method": "teacher", "config": {"steps": 1}}).build(bundle, Context(store, tmp_path))
        rows, reused = measure(bundle, run, setting, store, tmp_path, progress=False, bootstrap=20, latency=False)
        again, reused_again = measure(bundle, run, setting, store, tmp_path, progress=False, bootstrap=20,
                                      latency=False)
    rec = as_record(rows)
    assert not reused and reused_again and as_record(again) == rec
    assert isinstance(rec["fid"], float) and rec["fid"] > 0 and rec["fid_sd"] > 0 and rec["isc"] > 0
    assert rec["precision"] == rec["recall"] == NEEDS_REAL_IMAGES   # stored and read back as the text
    extra = rows[0]["extra"]
    assert STATISTICS_NOTE in extra["quality_note"] and extra["not_measured"] == ["precision", "recall"]
    assert "generated images only" in extra["bootstrap"]["fid_over"]
    assert with_spread("precision", rec) == fmt("recall", rec["recall"]) == "needs real images"   # never blank
    assert with_spread("fid", rec).startswith(fmt("fid", rec["fid"]) + " [")


# ---- keys ---------------------------------------------------------------------------------------------------------
def test_settings_keep_their_keys_and_key_weights_and_statistics_by_content(tmp_path):
    from bench.cache import stable_hash
    from bench.evaluation.setting import EvaluationSetting
    from bench.rows import RowSetting

    # the keys of settings without the new fields, as stored before they existed
    assert stable_hash(RowSetting().key_fields()) == "39744ab5b7faff5b"
    assert stable_hash(RowSetting(n_images=10, teacher_steps=4, batch_size=5).key_fields()) == "750de869e0f787bb"
    assert "extractor_weights" not in EvaluationSetting().to_dict()

    a, b = tmp_path / "a.safetensors", tmp_path / "b" / "other-name.safetensors"
    b.parent.mkdir()
    shutil.copy(CLASSIFIER, a)
    shutil.copy(CLASSIFIER, b)
    ka, kb = (RowSetting(extractor_weights=str(p)).key_fields() for p in (a, b))
    assert ka == kb and ka["extractor_weights"] == file_identity(CLASSIFIER) != str(a)
    assert ka != RowSetting().key_fields()
    s1, s2 = (tmp_path / "s1.npz", tmp_path / "s2.npz")
    write_statistics(s1, np.zeros(128), np.eye(128))
    shutil.copy(s1, s2)
    assert RowSetting(real=str(s1)).key_fields() == RowSetting(real=str(s2)).key_fields()
    write_statistics(s2, np.ones(128), np.eye(128))
    assert RowSetting(real=str(s1)).key_fields() != RowSetting(real=str(s2)).key_fields()
    assert asdict(RowSetting(real=str(s1)))["real"] == str(s1)   # the path stays in the row's provenance

    e = EvaluationSetting.for_images(4, extractor_weights=str(a), real=str(s1))
    assert EvaluationSetting(**e.to_dict()) == e and e.to_dict()["extractor_weights"] == str(a)
    assert e.key() == replace(e, extractor_weights=str(b)).key() != replace(e, extractor_weights=None).key()
    assert e.key() != replace(e, real=str(s2)).key()


@pytest.mark.filterwarnings("ignore:FID statistics of 10 images")
def test_evaluator_fid_fitness_against_a_statistics_file(tmp_path):
    from bench.evaluation.evaluator import Evaluator
    from bench.evaluation.setting import EvaluationSetting
    from bench.quality import fidelity
    from flexiffusion.schedule import Plan

    real = write_images(tmp_path / "real", 150, seed=3)
    path = save_statistics(real, "digits-cnn", tmp_path / "real.npz")
    setting = EvaluationSetting.for_images(10, model="tiny-ddpm", grid_length=1, batch_size=10, threads=1,
                                           fitness="fid", real=str(path))
    ev = Evaluator(setting, states=None, cache_dir=tmp_path)
    plan = Plan.full(1)
    out = ev.evaluate([plan])[0]
    images, _ = ev.images(plan, reuse=False)
    expected = fidelity(images, real, ("fid",), extractor="digits-cnn", cache=False)["fid"]
    # measured: 9e-8 relative at 10 images, 6e-8 at 40 (features extracted in other batches and threads, and
    # FixedReferenceFID's symmetric eigen-solve vs torch-fidelity's eigvals); tolerance 1e-6 = 10x that
    assert out["fitness"] == out["fid"] == pytest.approx(expected, rel=1e-6)
    write_statistics(tmp_path / "small.npz", np.zeros(5), np.eye(5))
    with pytest.raises(UserError, match="small.npz: statistics of 5-d features, but extractor 'digits-cnn' gives 128"):
        Evaluator(replace(setting, real=str(tmp_path / "small.npz")), states=None, cache_dir=tmp_path).reference()
