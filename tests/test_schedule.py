import pytest

from baselines.deepcache import uniform_plan
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step


def test_json_round_trip():
    plan = Plan((Step.full(), Step.partial(3), Step.null(), Step.full(), Step.partial(12)), name="x")
    back = Plan.from_json(plan.to_json())
    assert back == plan and back.name == "x"
    assert back.tokens() == ["f", "p3", "n", "f", "p12"]
    assert plan.nfe == 4 and plan.branches == {3, 12}


def test_uniform_and_cache_needs():
    plan = uniform_plan(10, interval=5, branch=2)
    assert plan.tokens() == ["f", "p2", "p2", "p2", "p2"] * 2
    mixed = Plan.from_tokens(["f", "p1", "p3", "n", "f", "n"])
    assert mixed.cache_needs(0) == {1, 3} and mixed.cache_needs(4) == frozenset()


@pytest.mark.parametrize("tokens,match", [
    (["p2", "f"], "first step must be full"),
    (["n", "f"], "first step must be full"),
    (["f", "p13"], "branch 13 out of range"),
    (["f", "p0"], "branch 0 out of range"),
])
def test_validation(tokens, match):
    with pytest.raises(UserError, match=match):
        Plan.from_tokens(tokens).validate(num_branches=12)


def test_grid_length_and_malformed():
    with pytest.raises(UserError, match="base grid has 100"):
        Plan.full(50).validate(grid_length=100)
    with pytest.raises(UserError, match="malformed plan step"):
        Plan.from_tokens(["f", "x"])
    with pytest.raises(UserError, match="malformed plan JSON"):
        Plan.from_json("{not json")
    with pytest.raises(UserError, match="malformed plan"):
        Plan.from_json('{"steps": "f"}')
    with pytest.raises(UserError, match="empty plan"):
        Plan(()).validate()
