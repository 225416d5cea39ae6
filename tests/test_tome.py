"""ToMe (tomesd) as apply/remove: changes the output, removal restores it bit for bit, equals tomesd's own
apply_patch, combines with a DeepCache plan (= DeepCacheSDHelper + tomesd), clear error on a UNet2DModel."""
import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from baselines.deepcache import uniform_plan
from baselines.tome import ToMeConfig, apply_tome, remove_tome, tome_config, transformer_blocks
from flexiffusion.denoisers import TextDenoiser
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.sampler import sample
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler
from flexiffusion.seeds import noise_for_seeds

tomesd = pytest.importorskip("tomesd", reason="tomesd not installed: ToMe is delegated to it")
SEEDS, PROMPTS, N = [0, 1], ["a cat", "a dog"], 4


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture
def pipe(tiny_sd):
    tiny_sd.scheduler = DDIMScheduler.from_config(tiny_sd.scheduler.config)
    yield tiny_sd
    remove_tome(tiny_sd)
    tiny_sd.scheduler = PNDMScheduler.from_config(tiny_sd.scheduler.config)


def _run(pipe, plan):
    """Our sampler on the pipeline's U-Net; the global RNG is seeded because tomesd's random token partition
    (use_rand) forks it on the first call."""
    pos, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    torch.manual_seed(123)
    engine = StepEngine.attach(pipe.unet)
    try:
        return sample(TextDenoiser(pipe.unet, engine, guidance_scale=5.0),
                      make_scheduler("ddim", pipe.scheduler.config, len(plan)), plan,
                      noise_for_seeds(SEEDS, (4, 16, 16)), {"prompt_embeds": pos, "negative_prompt_embeds": neg}
                      ).latents
    finally:
        engine.detach()


def test_tome_changes_output_and_removal_restores(pipe):
    plan = Plan.full(N)
    ref = _run(pipe, plan)
    apply_tome(pipe, ToMeConfig(ratio=0.5))
    assert tome_config(pipe) == ToMeConfig(ratio=0.5)
    merged = _run(pipe, plan)
    assert not torch.equal(merged, ref)
    remove_tome(pipe)
    assert tome_config(pipe) is None
    assert not any(hasattr(m, "_tome_info") or type(m).__name__ == "ToMeBlock" for m in pipe.unet.modules())
    assert torch.equal(_run(pipe, plan), ref)


@pytest.mark.parametrize("config", [ToMeConfig(ratio=0.5), ToMeConfig(ratio=0.3, use_rand=False, merge_mlp=True)])
def test_equals_tomesd_apply_patch(pipe, config):
    plan = Plan.full(N)
    apply_tome(pipe, config)
    ours = _run(pipe, plan)
    remove_tome(pipe)
    tomesd.apply_patch(pipe, ratio=config.ratio, use_rand=config.use_rand, merge_mlp=config.merge_mlp)
    try:
        theirs = _run(pipe, plan)
    finally:
        tomesd.remove_patch(pipe)
    assert torch.equal(ours, theirs)


def test_combines_with_a_plan(pipe):
    """Engine + ToMe on a DeepCache plan == DeepCache's own helper + tomesd's own patch, bit for bit."""
    helper_cls = pytest.importorskip("DeepCache", reason="DeepCache not installed (the `test` extra)").DeepCacheSDHelper
    plan = uniform_plan(N, 2, 2)
    apply_tome(pipe, ToMeConfig(ratio=0.5))
    ours = _run(pipe, plan)
    remove_tome(pipe)
    assert not torch.equal(ours, _run(pipe, plan))  # ToMe changed the plan's result
    tomesd.apply_patch(pipe, ratio=0.5)
    helper = helper_cls(pipe=pipe)
    helper.set_params(cache_interval=2, cache_branch_id=1)
    helper.enable()
    try:
        torch.manual_seed(123)
        ref = pipe(PROMPTS, num_inference_steps=N, guidance_scale=5.0, latents=noise_for_seeds(SEEDS, (4, 16, 16)),
                   output_type="latent").images
    finally:
        helper.disable()
        tomesd.remove_patch(pipe)
    assert torch.equal(ours, ref)


def test_errors(tiny_unet, pipe):
    assert transformer_blocks(tiny_unet) == []
    with pytest.raises(UserError, match="UNet2DModel has none"):
        apply_tome(tiny_unet, ToMeConfig())
    with pytest.raises(UserError, match="ratio 0.8 outside"):
        apply_tome(pipe, ToMeConfig(ratio=0.8))
    with pytest.raises(UserError, match="max_downsample"):
        apply_tome(pipe, ToMeConfig(max_downsample=3))
    apply_tome(pipe.unet, ToMeConfig())
    with pytest.raises(UserError, match="already applied"):
        apply_tome(pipe, ToMeConfig())


def test_macs_counted_per_ratio_on_the_patched_model():
    """ToMe's MACs are counted (fvcore on the patched U-Net, per ratio), never assumed: they equal a count on the
    U-Net patched by tomesd itself and fall with the ratio.  On this tiny U-Net (32 channels) the token matching
    costs more than merging saves at ratio 0.25: the counted MACs are *above* the unpatched ones there."""
    from baselines.costing import cost_models, example_inputs
    from bench.cost.macs import count_call
    from bench.models import load_model

    bundle = load_model("tiny-sd")
    x, t, kwargs = example_inputs(bundle)
    plain = cost_models(bundle, branches=[2])["paper"]
    counted = {}
    for ratio in (0.25, 0.5, 0.7):
        models = cost_models(bundle, tome=ToMeConfig(ratio=ratio, use_rand=False), branches=[2])
        counted[ratio] = models["paper"]
        tomesd.apply_patch(bundle.unet, ratio=ratio, use_rand=False)
        try:
            direct = count_call(bundle.unet, (x, t), kwargs, method="__call__", static={"return_dict": False})
        finally:
            tomesd.remove_patch(bundle.unet)
        assert models["paper"].full_macs == direct.paper and models["complete"].full_macs == direct.complete
    for step in (-1, 2):  # the full step and partial(2), which runs the merged highest-resolution block
        values = [counted[r].step_macs[step] for r in (0.25, 0.5, 0.7)]
        assert values[0] > values[1] > values[2]
        assert values[0] > plain.step_macs[step] > values[1]
    assert tome_config(bundle) is None  # counting left no patch behind
