"""The common row harness and the ``flexbench run`` / ``baselines-table`` commands on the embedded model (few images,
few steps): measured NFE, MACs from the counted step types, reuse from the store by key, bad input through the CLI
(one line, exit 2, no store and no cache written)."""
import json

import pytest

from baselines.costing import bundle_cost_models
from baselines.registry import Context, Experiment
from bench.cli import main
from bench.rows import RowSetting, as_record, measure, row_key
from bench.store import ResultStore

METRICS = {"nfe", "grid", "macs_paper_g", "macs_complete_g", "avg_macs_paper_g", "avg_macs_complete_g",
           "speedup_paper", "speedup_complete", "latency_s_per_image", "latency_iqr_s_per_image",
           "generation_s_per_image", "fid", "rfid", "isc", "precision", "recall", "psnr_db", "ssim", "lpips",
           "peak_memory_mib", "cache_kib_per_image"}
SETTING = RowSetting(n_images=10, teacher_steps=4, batch_size=5)  # 2 batches: NFE is per batch


@pytest.fixture(scope="module")
def bundle():
    from bench.models import load_model

    return load_model("embedded")


def _measure(bundle, data, store, cache):
    run = Experiment.from_dict(data).build(bundle, Context(store, cache, progress=False))
    rows, reused = measure(bundle, run, SETTING, store, cache, progress=False)
    return run, as_record(rows), reused


def test_rows_measured_stored_and_reused(bundle, tmp_path, monkeypatch):
    lpips_file = tmp_path / "absent" / "alexnet-owt-7be5be79.pth"
    monkeypatch.setenv("FLEXBENCH_LPIPS_WEIGHTS", str(lpips_file))   # LPIPS's backbone is not here: the row says so
    cache = tmp_path / "cache"
    with ResultStore(tmp_path / "results.sqlite") as store:
        data = {"method": "deepcache", "config": {"steps": 4, "interval": 2, "branch": 3}}
        run, rec, reused = _measure(bundle, data, store, cache)
        assert not reused and METRICS <= set(rec) and "clip_score" not in rec  # class model: no CLIP score
        paper, complete = (bundle_cost_models(bundle)[c].step_macs for c in ("paper", "complete"))
        assert rec["nfe"] == 4 and rec["grid"] == 4  # counted U-Net calls: 2 full + 2 partial per batch
        assert rec["macs_paper_g"] * 1e9 == pytest.approx(2 * paper[-1] + 2 * paper[3], rel=1e-12)
        assert rec["macs_complete_g"] * 1e9 == pytest.approx(2 * complete[-1] + 2 * complete[3], rel=1e-12)
        assert rec["speedup_paper"] == pytest.approx(4 * paper[-1] / (2 * paper[-1] + 2 * paper[3]))
        assert rec["avg_macs_paper_g"] == pytest.approx(rec["macs_paper_g"] / 4)
        # against the teacher's images of the same seeds: close, not equal; memory of the generation pass
        assert 0 < rec["psnr_db"] < float("inf") and 0 < rec["ssim"] < 1 and rec["lpips"] == f"needs {lpips_file}"
        assert rec["peak_memory_mib"] > 0 and rec["cache_kib_per_image"] > 0   # DeepCache keeps deep features
        rows = store.get(row_key(bundle, run, SETTING))
        assert len(rows) == len(rec) - 8 and {r["metric"] for r in rows} == METRICS - {
            "latency_s_per_image", "latency_iqr_s_per_image"}  # one row per metric; latency: its own result
        assert all(r["n_images"] == 10 and r["seeds"] == "0-9" and r["experiment"] == "baselines" for r in rows)

        _, again, reused = _measure(bundle, data, store, cache)
        assert reused and again == rec  # the same key: read back, not recomputed

        _, teacher, _ = _measure(bundle, {"method": "teacher", "config": {"steps": 4}}, store, cache)
        assert teacher["speedup_paper"] == 1.0 and teacher["nfe"] == 4
        assert teacher["rfid"] < 1e-3  # the teacher's own images: rFID ~ 0 (float noise of the FID formula)
        assert teacher["psnr_db"] == float("inf") and teacher["ssim"] == 1.0   # stored and read back as such
        assert teacher["cache_kib_per_image"] == 0 and teacher["peak_memory_mib"] > 0   # all full steps: no cache
        _, plms, _ = _measure(bundle, {"method": "plms", "config": {"steps": 3}}, store, cache)
        assert plms["nfe"] == 4 and plms["grid"] == 4  # PLMS evaluates once more than its steps
        assert len(store.keys("row/")) == 3


def _cli(tmp_path, *args):
    return main(["run", *args, "--images", "10", "--teacher-steps", "4", "--batch-size", "5", "--quiet",
                 "--store", str(tmp_path / "results.sqlite"), "--cache-dir", str(tmp_path / "cache")])


def test_run_command_prints_its_row_and_reuses_it(tmp_path, capsys):
    assert _cli(tmp_path, "dpm-singlestep", "--steps", "3", "--order", "2") == 0
    out = capsys.readouterr().out
    assert "| dpm-solver-2-singlestep-3 | 3 |" in out and "stored in" in out
    assert _cli(tmp_path, "dpm-singlestep", "--steps", "3", "--order", "2") == 0
    assert "reused from" in capsys.readouterr().out
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps([{"method": "ddim", "config": {"steps": 2}, "label": "two steps"},
                               {"method": "deepcache-plus", "config": {"steps": 4, "interval": 2, "branch": 1,
                                                                        "form": "ldm"}}]))
    assert _cli(tmp_path, "--experiment", str(exp)) == 0
    out = capsys.readouterr().out
    assert "| two steps | 2 |" in out and "deepcache-N2-b1+p1.5" in out


@pytest.mark.parametrize("args,needle", [
    (["deepcache", "--branch", "12"], "branch 12 out of range"),
    (["ddim", "--steps", "1001"], "exceed the model's training grid"),
    (["dpm-multistep", "--order", "4"], "order 4 not supported"),
    (["tome"], "ToMe needs transformer blocks"),
    (["deepcache", "--tome-ratio", "0.5"], "ToMe needs transformer blocks"),
    (["autodiffusion", "--k", "4", "--budget-layers", "10"], "below what any candidate can reach"),
    (["deepcache-plus", "--steps", "10", "--interval", "2", "--center", "5", "--pow", "1.4"], "no pow in"),
    (["ddim", "--order", "2"], "has no field 'order'"),
    (["ddim", "--set", "steps"], "malformed --set"),
    ([], "name a METHOD"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, needle):
    assert _cli(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # neither the store nor the cache was created


def test_autodiffusion_row_and_stored_search(tmp_path, capsys, monkeypatch):
    args = ["autodiffusion", "--k", "2", "--set", "search_images=4", "--set", "evolution.population=3",
            "--set", "evolution.top_k=1", "--set", "evolution.mutation=1", "--set", "evolution.crossover=0",
            "--set", "evolution.epochs=1"]
    assert _cli(tmp_path, *args) == 0
    assert "| autodiffusion-K2 | 2 |" in capsys.readouterr().out
    with ResultStore(tmp_path / "results.sqlite") as store:
        (key,) = store.keys("autodiffusion-search/")
        best = store.get(key)[0]["extra"]["candidate"]
        (row_key_,) = store.keys("row/")
        assert store.get(row_key_)[0]["extra"]["candidate"] == best
    from baselines.autodiffusion import search

    def no_search(self):
        raise AssertionError("the stored search result must be reused")

    monkeypatch.setattr(search.Evolution, "run", no_search)
    assert _cli(tmp_path, *args, "--seed0", "10") == 0  # a new row (other seeds) on the stored candidate
    assert "stored in" in capsys.readouterr().out


def test_baselines_table_from_the_store(tmp_path, capsys):
    out = tmp_path / "table.md"
    args = ["baselines-table", "--teacher-steps", "4", "--images", "10", "--batch-size", "5", "--quiet",
            "--ad-steps", "", "--small", "", "--plus", "", "--dpm-deepcache", "", "--branch", "2",
            "--store", str(tmp_path / "results.sqlite"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    for label in ["DDIM 4 (teacher)", "DeepCache-A", "DeepCache-B", "DeepCache-C", "DeepCache-D"]:
        assert f"| {label} |" in text
    for column in ["NFE", "avg MACs (G)", "avg MACs complete (G)", "speed-up (MACs)", "s/image (batch 8)", "FID",
                   "rFID", "IS", "precision", "recall"]:
        assert f" {column} |" in text
    capsys.readouterr()
    assert main([*args, "--stored-only"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()  # rendered from the store alone


def test_guided_text_rows_double_complete_macs_and_change_the_images(tmp_path):
    """A text model's rows under classifier-free guidance (RowSetting.guidance_scale): the images differ from the
    unguided ones, the complete convention counts both halves of each batched-CFG call, the paper's counts batch 1;
    an unguided setting keeps its old key (no guidance field in it)."""
    from dataclasses import asdict, replace

    from bench.models import load_model

    t2i = load_model("embedded-t2i")
    base = RowSetting(n_images=10, teacher_steps=3, batch_size=10, prompts=("a handwritten seven",))
    guided = replace(base, guidance_scale=t2i.extras["default_sampler"]["guidance_scale"])
    with ResultStore(tmp_path / "results.sqlite") as store:
        run = Experiment.from_dict({"method": "ddim", "config": {"steps": 3}}).build(t2i, Context(store, tmp_path))
        plain = as_record(measure(t2i, run, base, store, tmp_path, progress=False)[0])
        cfg = as_record(measure(t2i, run, guided, store, tmp_path, progress=False)[0])
    assert cfg["macs_paper_g"] == pytest.approx(plain["macs_paper_g"], rel=1e-12)
    assert cfg["macs_complete_g"] == pytest.approx(2 * plain["macs_complete_g"], rel=1e-12)
    assert cfg["speedup_complete"] == pytest.approx(plain["speedup_complete"])
    assert cfg["nfe"] == plain["nfe"] == 3                  # batched CFG: one U-Net call per step
    assert cfg["clip_score"] != plain["clip_score"]         # guidance changed the images
    unset = {k: v for k, v in asdict(guided).items() if k != "extractor_weights"}   # None: keys as before the field
    assert "guidance_scale" not in base.key_fields() and guided.key_fields() == unset
    assert row_key(t2i, run, base) != row_key(t2i, run, guided)


def test_text_model_costs_use_its_context_length_and_match_the_preset():
    """Rows count MACs on the model as it runs: the text context has the prompt encoder's length (embedded-t2i: 20
    tokens, not SD's 77), so the bundle's count equals the cost preset's (bench.presets, the real architecture)."""
    from baselines.costing import example_inputs
    from bench.cost.schedule_cost import CostModel
    from bench.models import load_model

    t2i = load_model("embedded-t2i")
    _, _, kwargs = example_inputs(t2i)
    length = t2i.encode_prompts(["a handwritten seven"])["prompt_embeds"].shape[1]
    assert kwargs["encoder_hidden_states"].shape[1] == length < 77
    assert bundle_cost_models(t2i)["paper"].full_macs == CostModel.for_preset("embedded-t2i").full_macs
