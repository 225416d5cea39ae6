"""The image-count ablation (bench/search/ablation.py) on a synthetic stand-in source: values, resume, store rows."""
import numpy as np
import pytest
import torch

from bench.evaluation.frechet import FixedReferenceFID
from bench.quality.features import fid_statistics
from bench.search import ablation
from bench.store import ResultStore
from flexiffusion.errors import UserError
from flexiffusion.search.space import SearchSpace

D, K = 6, 40


class FakeSource:
    """Features = teacher features + noise scaled by the plan's cost: a known true ranking."""

    key = "fake-setting"
    row_fields = {"model": "fake", "weights": "random", "scheduler": "ddim", "device": "cpu"}

    def __init__(self, fail_after=None):
        g = torch.Generator().manual_seed(0)
        self.t_images = torch.randint(0, 256, (K, 1, 4, 4), dtype=torch.uint8, generator=g)
        self.t_feats = torch.randn(K, D, generator=g, dtype=torch.float64)
        self.calls, self.fail_after = 0, fail_after

    def teacher(self):
        return self.t_images, self.t_feats

    def real(self):
        g = torch.Generator().manual_seed(1)
        return FixedReferenceFID(fid_statistics(torch.randn(200, D, generator=g, dtype=torch.float64)))

    def candidate(self, plan):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        scale = 1.0 + plan.nfe / 20
        g = torch.Generator().manual_seed(plan.nfe)
        feats = self.t_feats * scale + 0.1 * torch.randn(K, D, generator=g, dtype=torch.float64)
        images = (self.t_images.int() + plan.nfe).clamp(0, 255).to(torch.uint8)
        return images, feats, {"sampling_s": 1.0, "features_s": 0.5}


SPACE = SearchSpace((3, 4), (1, 2), (1, 2, 3), 3, 12)
CONFIG = ablation.AblationConfig("embedded-50", 5, (10, 20, 40), None, 0)


def test_candidate_values_use_the_first_k_images():
    src = FakeSource()
    plan = SPACE.compile(ablation.draw_candidates(SPACE, 1, 0)[0])
    images, feats, _ = src.candidate(plan)
    v = ablation.candidate_values(images, feats, *src.teacher(), src.real(), (10, 40), 40)["values"]
    sub = ablation.candidate_values(images[:10], feats[:10], src.t_images[:10], src.t_feats[:10], src.real(),
                                    (10,), 10)["values"]
    assert v[("rfid", 10)] == sub[("rfid", 10)] and v[("mse", 10)] == sub[("mse", 10)]
    assert v[("fid_reference", 40)] == v[("fid", 40)]
    assert v[("rfid", 40)] != v[("rfid", 10)]


def test_resume_after_a_kill_recomputes_nothing_done(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store, pytest.raises(KeyboardInterrupt):
        ablation.evaluate_candidates(CONFIG, SPACE, FakeSource(fail_after=3), store)
    with ResultStore(path) as store:
        assert len(store.keys("ablation/")) == 3  # each finished candidate committed as it completed
    src = FakeSource()
    with ResultStore(path) as store:
        records, new = ablation.evaluate_candidates(CONFIG, SPACE, src, store)
    assert (new, src.calls, len(records)) == (2, 2, 5)
    fresh = FakeSource()
    with ResultStore(tmp_path / "fresh.sqlite") as store:
        again, _ = ablation.evaluate_candidates(CONFIG, SPACE, fresh, store)
    assert [r["digest"] for r in again] == [r["digest"] for r in records]
    values = lambda r: {k: v for k, v in r.items() if isinstance(k, tuple) and k[0] in ablation.METRICS}
    assert [values(r) for r in again] == [values(r) for r in records]  # stored values = recomputed values


def test_summary_tau_and_table_rows(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        records, _ = ablation.evaluate_candidates(CONFIG, SPACE, FakeSource(), store)
        summary = ablation.summarize(records, CONFIG)
        stored, reused = ablation.store_summary(store, summary, CONFIG, records, FakeSource(),
                                                {"model": "fake", "weights": "random"})
        assert not reused and ablation.store_summary(store, summary, CONFIG, records, FakeSource(), {})[1]
        t4 = store.frame(experiment="ablation-summary")
    by = {(t["metric"], t["k"]): t for t in summary["table"]}
    assert by[("fid", 40)]["kendall_tau"] == pytest.approx(1.0)  # FID with the reference's images = the reference
    assert by[("rfid", 40)]["kendall_tau"] > 0.5  # the stand-in's noise grows with NFE: a real ranking
    assert 0 <= by[("rfid", 10)]["p_value"] <= 1
    assert by[("rfid", 20)]["s_per_candidate"] == pytest.approx(1.5 * 20 / 40, abs=0.05)
    # one group of rows per metric and k: images, s/candidate, tau, p-value, candidates, the reference's own tau
    assert len(t4) == 3 * 3 * 6 and set(t4["key"]) == {stored.key}
    assert set(t4.groupby(["method", "n_images"]).size()) == {6}
    rfid20 = {r["metric"]: r["value"] for _, r in t4[(t4.method == "rfid") & (t4.n_images == 20)].iterrows()}
    assert rfid20["k_images"] == 20 and rfid20["kendall_tau"] == by[("rfid", 20)]["kendall_tau"]
    assert rfid20["kendall_p"] == by[("rfid", 20)]["p_value"] and rfid20["n_candidates"] == 5
    assert rfid20["reference_tau"] == summary["reference_noise"]["kendall_tau"]
    assert t4["git_commit"].notna().all() and (t4["weights"] == "random").all()
    ablation.plot(summary, tmp_path / "tau.png")
    assert (tmp_path / "tau.png").stat().st_size > 1000
    assert list(ablation.frame(summary).columns[:3]) == ["metric", "k", "kendall_tau"]


@pytest.mark.parametrize("kwargs, word", [({"ks": (1, 10)}, "--k"), ({"candidates": 2}, "--candidates"),
                                          ({"reference_images": 3}, "--reference-images")])
def test_bad_config_is_one_user_error(kwargs, word):
    with pytest.raises(UserError, match=word):
        ablation.AblationConfig(**kwargs)


def test_cli_bad_k_exits_2_writing_nothing(tmp_path, capsys):
    from bench.cli import main

    store = tmp_path / "s.sqlite"
    assert main(["ablation", "--k", "10,x", "--store", str(store)]) == 2
    assert "--k" in capsys.readouterr().err and not store.exists()
