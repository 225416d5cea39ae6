"""DeepCache's branch ids on our branch numbering, on the DDPM CIFAR-10 layout (UNet2DModel (128, 256, 256, 256),
two resnets per block, downsamplers in the first three): DeepCache's id splits into (level id // 3, position
id % 3: 0, 1 resnets, 2 the downsampler) naming the first down module a partial step skips, so b = id + 1."""
import pytest

from baselines.deepcache import engine_branch
from bench.presets import get_preset
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError


@pytest.fixture(scope="module")
def cifar_engine():
    return StepEngine(get_preset("ddpm-cifar10").build_unet())


def test_ddpm_cifar_layout_has_twelve_branches(cifar_engine):
    producers = [b.producer for b in cifar_engine.branches]
    assert producers == ["conv_in",
                         "down.0.resnets.0", "down.0.resnets.1", "down.0.downsamplers.0",
                         "down.1.attentions.0", "down.1.attentions.1", "down.1.downsamplers.0",  # attention at 16x16
                         "down.2.resnets.0", "down.2.resnets.1", "down.2.downsamplers.0",
                         "down.3.resnets.0", "down.3.resnets.1"]


@pytest.mark.parametrize("deepcache_id", range(11))
def test_deepcache_id_is_our_branch_minus_one(cifar_engine, deepcache_id):
    b = engine_branch(deepcache_id, cifar_engine)
    assert b == deepcache_id + 1
    level, position = divmod(deepcache_id, 3)
    skipped = cifar_engine.branches[b].producer  # skip b + 1 (0-based index b): the first module not computed
    kind = "attentions" if level == 1 else "resnets"  # a resnet's skip leaves through its attention block
    assert skipped == (f"down.{level}.{kind}.{position}" if position < 2 else f"down.{level}.downsamplers.0")


def test_the_papers_ddpm_branch_2_is_our_partial_3(cifar_engine):
    """DeepCache's DDPM README runs --branch 2; the paper's Table 2 rows reproduce at partial(3) (test_cost)."""
    assert engine_branch(2, cifar_engine) == 3


def test_an_id_naming_a_missing_module_is_refused(cifar_engine):
    with pytest.raises(UserError, match="down.3.downsamplers.0"):
        engine_branch(11, cifar_engine)  # the deepest level has no downsampler
