"""The HTML report: tables with provenance, figures beside the page, atomic writes, the manifest gatherer, and a
headless-Chromium check (screenshot, console errors, images that do not load) with a negative case."""
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from reports import figures_samples, html as rh


def _small_report(tmp_path) -> rh.Report:
    rng = np.random.default_rng(0)
    imgs = {name: rng.integers(0, 256, (4, 1, 16, 16), dtype=np.uint8) for name in ("teacher", "method A")}
    grid = figures_samples.sample_grid(imgs, tmp_path / "grid.png", seeds=[0, 1, 2, 3])
    strips = figures_samples.schedule_strips([Plan.full(10, "teacher"), Plan.from_tokens(
        ["f", "p1", "p2", "n", "f", "p3", "n", "n", "f", "p1"], "mixed")], tmp_path / "strips.png")
    df = pd.DataFrame({"plan": ["teacher", "method A"], "NFE": [10, 7], "FID": [22.5, 27.25]}).set_index("plan")
    prov = [{"model": "embedded", "n": 4, "device": "cpu", "key": "k1"},
            {"model": "embedded", "n": 4, "device": "cpu", "key": "k2"}]
    return rh.Report("tiny", [rh.Table.from_dataframe("results", df, prov), rh.Figure("samples", grid),
                              rh.Figure("schedules", strips)])


def test_report_has_tables_provenance_and_relative_images(tmp_path):
    page = rh.write_report(_small_report(tmp_path), tmp_path / "out")
    text = page.read_text()
    assert "<th>FID</th>" in text and "<td title=\"model=embedded, n=4, device=cpu, key=k2\" class=\"n\">27.250</td>" in text
    assert "<details><summary>provenance</summary>" in text and "<script" not in text and "http" not in text
    srcs = [s.split('"')[1] for s in text.split("<img src=")[1:]]
    assert len(srcs) == 2 and all((page.parent / s).is_file() and not os.path.isabs(s) for s in srcs)


def test_failed_write_keeps_the_previous_report(tmp_path, monkeypatch):
    rh.write_report(rh.Report("first"), tmp_path / "out")
    def boom(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(rh, "render_html", boom)
    with pytest.raises(RuntimeError):
        rh.write_report(rh.Report("second"), tmp_path / "out")
    assert "first" in (tmp_path / "out" / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left behind


def test_missing_figure_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        rh.write_report(rh.Report("x", [rh.Figure("f", tmp_path / "nope.png")]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gather_reads_manifests(tmp_path):
    exp = tmp_path / "table2"
    exp.mkdir()
    (exp / "table.md").write_text("| method | FID |\n|---|---|\n| DDIM | 22.1 |\n| DeepCache | 27.2 |\n")
    figures_samples.schedule_strips([Plan.full(4, "ddim")], exp / "plot.png")
    (exp / "provenance.json").write_text(json.dumps([{"n": 1000}, {"n": 500}]))
    (exp / "manifest.json").write_text(json.dumps({"title": "Table 2", "items": [
        {"file": "table.md", "title": "Table 2"}, {"file": "plot.png", "title": "Pareto"}]}))
    report = rh.gather(tmp_path)
    table, fig = report.sections
    assert table.columns == ["method", "FID"] and table.rows == [["DDIM", "22.1"], ["DeepCache", "27.2"]]
    assert table.provenance[1] == {"n": 500} and fig.title == "Pareto"
    with pytest.raises(UserError, match="no \\*/manifest.json"):
        rh.gather(tmp_path / "table2")


def test_step_codes_and_strip_colours():
    plan = Plan.from_tokens(["f", "p2", "n", "p1"])
    assert figures_samples.step_codes(plan, max_branch=3).tolist() == [4, 2, 0, 1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Injected into a copy of the page (the report itself has no scripts): tags console errors, uncaught errors and
# failed resource loads (capture phase: an <img> error event does not bubble), checks every image decoded, and
# says it ran, so a page where the probe never ran cannot pass.
PROBE = """<script>
const say = (m) => console.log("REPORT-" + m);
const err = console.error; console.error = (...a) => { say("PROBLEM console.error " + a.join(" ")); err(...a); };
window.addEventListener("error", (e) => say("PROBLEM load " + (e.target.src || e.message)), true);
window.addEventListener("load", () => {
  for (const i of document.images) if (!i.complete || i.naturalWidth === 0) say("PROBLEM missing image " + i.src);
  say("LOADED " + document.images.length + " images");
});
</script>"""


def _chromium_check(page, tmp_path) -> list[str]:
    """Problems headless Chromium saw opening ``page``: console errors, failed loads, images that did not decode."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    shot = tmp_path / "shot.png"
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                          f"--screenshot={shot}", "--window-size=1200,1600", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    probe.unlink()
    lines = [ln for ln in res.stderr.splitlines() if "REPORT-" in ln]
    problems = [ln.split("REPORT-PROBLEM", 1)[1] for ln in lines if "REPORT-PROBLEM" in ln]
    if not any("REPORT-LOADED" in ln for ln in lines):
        problems.append(f"the probe never reported the page loaded (rc {res.returncode}): {res.stderr[-500:]}")
    if not shot.is_file() or shot.stat().st_size == 0:
        problems.append(f"no screenshot (rc {res.returncode})")
    return problems


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium absent (Debian package `chromium`; .ci/run "
                                             "installs it)")
def test_report_opens_in_headless_chromium(tmp_path):
    page = rh.write_report(_small_report(tmp_path), tmp_path / "out")
    assert _chromium_check(page, tmp_path) == []
    assert (tmp_path / "shot.png").stat().st_size > 10_000  # a screenshot with the tables and figures drawn


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium absent (Debian package `chromium`; .ci/run "
                                             "installs it)")
def test_chromium_check_fails_on_a_broken_image(tmp_path):
    page = rh.write_report(_small_report(tmp_path), tmp_path / "out")
    page.write_text(page.read_text().replace("</body>", '<img src="img/missing.png" alt="broken"></body>'))
    problems = _chromium_check(page, tmp_path)
    assert any("missing image" in p and "missing.png" in p for p in problems), problems
