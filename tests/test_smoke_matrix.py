"""The smoke matrix (issue 22, item 3; ``flexbench smoke``): every experiment spec on every paper model it declares,
from random-weight folders in the real diffusers layouts at the real architectures (reduced sample sizes, stated in
each folder's ``flexbench_fixture.json``), through the real commands only; then a search on each paper model's
first preset and ``flexbench sample`` of its best plan.  Slow tier: ``.ci/run`` runs it after the default run.
The numbers are meaningless; the path is what is proven."""
from __future__ import annotations

import pytest

from bench.commands.smoke import CLIP_MODEL, check_spec, matrix, search_and_sample
from bench.models.catalog import PAPER_MODELS

CASES = matrix()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from bench.models.fixtures import build_all

    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEXBENCH_CACHE", str(root / "cache"))   # teachers and features: not the user's cache
        yield root, build_all(root / "fixtures", list(PAPER_MODELS), clip_model=CLIP_MODEL)


def test_the_matrix_covers_every_paper_model_of_every_spec():
    from bench.experiments.spec import known, load

    assert {(n, m) for n in known() for m in load(n).models if m in PAPER_MODELS} == set(CASES)
    assert {m for _, m in CASES} == set(PAPER_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name,model", CASES)
def test_spec_on_paper_model(name, model, smoke):
    root, fx = smoke
    log = (root / "smoke.log").open("a")
    problems = check_spec(name, model, fx, root, lambda line: log.write(line + "\n"))
    assert problems == [], f"{name} on {model}: {problems}"


@pytest.mark.slow
@pytest.mark.parametrize("model", PAPER_MODELS)
def test_search_and_sample_on_paper_model(model, smoke):
    root, fx = smoke
    log = (root / "smoke.log").open("a")
    assert search_and_sample(model, fx, root, lambda line: log.write(line + "\n")) == []
