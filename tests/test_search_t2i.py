"""Searches on a text-to-image model (the embedded-t2i stand-in of SD v1.5, Table 3): prompts and guidance in the
evaluation setting, the ``embedded-t2i-27`` preset end to end, and the searched row's sampler in the runner."""
import json

import pytest

from bench.cli import main
from bench.evaluation.evaluator import Evaluator
from bench.evaluation.setting import EvaluationSetting
from bench.search.setup import text_condition
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan


def test_settings_without_prompts_keep_their_dict_and_key():
    plain = EvaluationSetting.for_images(4)
    assert "prompts" not in plain.to_dict()  # so keys stored before prompts existed still match
    assert EvaluationSetting(**plain.to_dict()).key() == plain.key()
    prompted = EvaluationSetting.for_images(4, model="embedded-t2i", prompts=("a", "b", "c", "d"))
    assert prompted.to_dict()["prompts"] == ("a", "b", "c", "d")
    assert prompted.key() != EvaluationSetting.for_images(4, model="embedded-t2i", prompts=("a", "b", "c", "e")).key()
    assert prompted.prompts_for(1, 3) == ["b", "c"]
    assert EvaluationSetting.for_images(3, prompts=["x"]).prompts_for(0, 3) == ["x"] * 3
    assert plain.prompts_for(0, 4) is None
    with pytest.raises(UserError, match="3 prompts for 4 images"):
        EvaluationSetting.for_images(4, prompts=("a", "b", "c"))


def test_text_condition_defaults_file_and_refusals(tmp_path):
    from bench.models import load_model

    t2i, digits = load_model("embedded-t2i"), load_model("embedded")
    prompts, guidance = text_condition(t2i, 12)
    assert prompts[:2] == ("a handwritten zero", "a handwritten one") and prompts[11] == "a handwritten one"
    assert guidance == 1.5  # the model's default sampler (bench/embedded/t2i/unet.py)
    assert text_condition(t2i, 2, guidance=3.0)[1] == 3.0
    f = tmp_path / "p.txt"
    f.write_text("a seven\n\nthe digit 3\n")
    assert text_condition(t2i, 3, str(f))[0] == ("a seven", "the digit 3", "a seven")
    with pytest.raises(UserError, match="does not exist"):
        text_condition(t2i, 3, str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="holds no prompt"):
        text_condition(t2i, 3, str(tmp_path / "empty.txt"))
    assert text_condition(digits, 3) == ((), None)
    with pytest.raises(UserError, match="takes no text"):
        text_condition(digits, 3, str(f))


def test_prompts_steer_the_candidate_images(tmp_path):
    plan = Plan.full(51)
    kw = dict(model="embedded-t2i", scheduler="plms", grid_length=51, guidance=1.5, batch_size=2, threads=1)
    a = Evaluator(EvaluationSetting.for_images(2, prompts=("a handwritten one",) * 2, **kw), states=None,
                  cache_dir=tmp_path)
    b = Evaluator(EvaluationSetting.for_images(2, prompts=("a handwritten one", "a handwritten eight"), **kw),
                  states=None, cache_dir=tmp_path)
    ia, ib = a.images(plan)[0], b.images(plan)[0]
    assert (ia[0] == ib[0]).all()          # same seed, same prompt: the same image
    assert (ia[1] != ib[1]).any()          # same seed, another prompt: another image


def test_tiny_t2i_search_runs_and_its_best_plan_samples(tmp_path, capsys):
    out, store = tmp_path / "o", tmp_path / "s.sqlite"
    argv = ["search", "--preset", "embedded-t2i-27", "--images", "4", "--iterations", "1", "--initial", "2",
            "--children", "2", "--parents", "2", "--threads", "1", "--batch-size", "4", "--store", str(store),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "best: rfid" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["scheduler"] == "plms"
    assert summary["best"]["avg_macs"] <= 90 / 338.76 * summary["setting"]["step_macs"][-1]
    assert main(["sample", "--model", "embedded-t2i", "--plan", str(out / "best.json"), "--seeds", "0-1",
                 "--guidance", "1.5", "--prompt", "a handwritten two", "--out", str(tmp_path / "img")]) == 0
    assert len(list((tmp_path / "img").iterdir())) == 2


def test_searched_rows_run_on_their_presets_sampler():
    from bench.experiments.searched import searched_scheduler

    assert searched_scheduler("embedded-t2i-27") == "plms"
    assert searched_scheduler("embedded-50") == "ddim"
    with pytest.raises(UserError, match="DPM-Solver orders"):
        searched_scheduler("cifar10-dpm")
