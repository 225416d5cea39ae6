"""Random-weight fixture folders in the real layouts (bench.models.fixtures), the LDM-4-G class-token layout and
folder inspection (bench.models.loading.inspect_folder): layout logic on tiny models, the real architectures of
DDPM CIFAR-10 and LDM-4-G in one test, DDPM LSUN and SD v1.5 in a slow one."""
import json

import pytest
import torch

from bench.models import fixtures, load_model
from bench.models.loading import ClassEmbedder, inspect_folder
from bench.models.tiny import DDPM_SCHEDULER, tiny_unet2d
from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.schedule import Step


def _one_line_error(kind, folder, *needles):
    with pytest.raises(UserError) as err:
        inspect_folder(kind, str(folder))
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    with pytest.raises(UserError) as again:  # the loader refuses with the same line
        load_model(kind, str(folder))
    assert str(again.value) == msg
    return msg


def _tiny_ldm_class_token(folder, classes=10, dim=16, seed=0):
    """An LDM-4-G-layout folder at a tiny size: the cin256-v2 block types, one context token of ``dim``."""
    from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel

    from bench.presets import LDM_SCHEDULER

    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3, mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",), cross_attention_dim=dim, attention_head_dim=1,
        norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0).save_pretrained(folder / "unet")
    VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=8, num_vq_embeddings=32, vq_embed_dim=3).save_pretrained(folder / "vqvae")
    DDIMScheduler.from_config(LDM_SCHEDULER).save_pretrained(folder / "scheduler")
    emb = ClassEmbedder(classes, dim, null_class=classes)
    torch.nn.init.normal_(emb.embedding.weight, generator=torch.Generator().manual_seed(seed))
    emb.save(folder / "class_embedder")
    return folder


def _tiny_ddpm(folder):
    from diffusers import DDPMScheduler

    tiny_unet2d().save_pretrained(folder)
    DDPMScheduler.from_config(DDPM_SCHEDULER).save_pretrained(folder)
    return folder


def _shapes_agree(info, bundle):
    assert tuple(bundle.sample_shape) == info.sample_shape
    assert bundle.conditioning == info.conditioning and bundle.num_classes == info.num_classes
    assert bundle.null_class == info.null_class and bundle.adapter == info.adapter
    with torch.no_grad():
        images = bundle.decode(torch.randn(1, *info.sample_shape))
    assert tuple(images.shape[1:]) == info.image_shape and torch.isfinite(images).all()


def test_class_token_folder_layout_and_denoiser(tmp_path):
    folder = _tiny_ldm_class_token(tmp_path / "ldm")
    info = inspect_folder("ldm", str(folder))
    assert (info.unet_class, info.conditioning, info.adapter) == ("UNet2DConditionModel", "class", "class-token")
    assert (info.num_classes, info.null_class, info.sample_shape, info.image_shape) == (10, 10, (3, 8, 8), (3, 32, 32))
    bundle = load_model("ldm", str(folder))
    _shapes_agree(info, bundle)
    assert bundle.extras["default_sampler"]["guidance_scale"] == 1.5
    table = bundle.class_embedder.embedding.weight
    assert table.shape == (11, 16) and any(m is bundle.class_embedder for m in bundle.modules())

    x, t, labels = torch.randn(2, 3, 8, 8), torch.tensor(500), torch.tensor([3, 7])
    with torch.no_grad():
        ref_c = bundle.unet(x, t, encoder_hidden_states=table[labels][:, None, :]).sample
        ref_u = bundle.unet(x, t, encoder_hidden_states=table[[10, 10]][:, None, :]).sample
        assert torch.allclose(bundle.denoiser()(x, t, labels), ref_c, atol=1e-5)
        guided = ref_u + 1.5 * (ref_c - ref_u)
        batched = bundle.denoiser(guidance_scale=1.5)(x, t, labels)
        split = bundle.denoiser(guidance_scale=1.5, cfg="split")(x, t, labels)
        assert torch.allclose(batched, guided, atol=1e-4) and torch.allclose(split, guided, atol=1e-4)
        with pytest.raises(UserError, match="one label per sample"):
            bundle.denoiser()(x, t, torch.tensor([1]))

        engine = StepEngine.attach(bundle.unet)
        try:
            denoiser = bundle.denoiser(engine, guidance_scale=1.5)
            b = engine.num_branches
            with engine.step(Step.full(), keep={1, b}):
                full = denoiser(x, t, labels)
            for branch in (1, b):  # same inputs: a partial step rebuilds the full output from the cache
                with engine.step(Step.partial(branch)):
                    assert torch.allclose(denoiser(x, t, labels), full, atol=1e-4)
            with engine.step(Step.partial(1)):
                other = denoiser(torch.randn(2, 3, 8, 8), t, labels)
            assert other.shape == full.shape and torch.isfinite(other).all()
        finally:
            engine.detach()


def test_class_token_bundle_samples_with_drawn_labels(tmp_path):
    from baselines.deepcache import uniform_plan
    from bench.generate import generate_images

    bundle = load_model("ldm", str(_tiny_ldm_class_token(tmp_path / "ldm")))
    plan = uniform_plan(6, interval=3, branch=2)  # full and partial steps through the sampler
    images = generate_images(bundle, plan, seeds=[0, 1, 2], guidance_scale=1.5, batch_size=2, progress=False)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    again = generate_images(bundle, plan, seeds=[1], guidance_scale=1.5, batch_size=1, progress=False)
    assert torch.equal(again[0], images[1])  # labels_for_seeds: image i's class depends on its seed only


def test_inspect_folder_matches_loaded_bundles(tmp_path, tiny_sd):
    ddpm = _tiny_ddpm(tmp_path / "ddpm")
    info = inspect_folder("ddpm", str(ddpm))
    assert (info.layout, info.unet_class, info.sample_shape, info.image_shape) == \
        ("model", "UNet2DModel", (1, 16, 16), (1, 16, 16))
    _shapes_agree(info, load_model("ddpm", str(ddpm)))

    tiny_sd.save_pretrained(tmp_path / "sd")
    info = inspect_folder("sd", str(tmp_path / "sd"))
    assert (info.conditioning, info.sample_shape, info.image_shape) == ("text", (4, 16, 16), (3, 32, 32))
    _shapes_agree(info, load_model("sd", str(tmp_path / "sd")))


def test_layout_refusals_are_one_line(tmp_path, tiny_sd):
    from diffusers import UNet2DConditionModel

    sd = tmp_path / "sd"
    tiny_sd.save_pretrained(sd)
    _one_line_error("ddpm", sd, "StableDiffusionPipeline", "not a DDPM folder", "'sd' loader")
    _one_line_error("ldm", sd, "not an LDM folder", "'sd' loader")

    ddpm = _tiny_ddpm(tmp_path / "ddpm")
    _one_line_error("sd", ddpm, "bare UNet2DModel", "not a Stable Diffusion pipeline folder", "'ddpm' loader")

    bare = tmp_path / "bare-unet"
    sd_unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    sd_unet.save_pretrained(bare)
    _one_line_error("sd", bare, "bare UNet2DConditionModel", "pass the pipeline's root folder")
    _one_line_error("ddpm", bare, "bare UNet2DConditionModel")

    wrong = tmp_path / "wrong-class"  # a DDPM folder whose config names another class
    _tiny_ddpm(wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(dict(cfg, _class_name="UNet2DConditionModel")))
    _one_line_error("ddpm", wrong, "UNet2DConditionModel")

    ldm = _tiny_ldm_class_token(tmp_path / "ldm")
    _one_line_error("sd", ldm, "not a Stable Diffusion pipeline folder", "'ldm' loader")
    cfg = json.loads((ldm / "vqvae" / "config.json").read_text())
    (ldm / "vqvae" / "config.json").write_text(json.dumps(dict(cfg, _class_name="AutoencoderKL")))
    _one_line_error("ldm", ldm, "a AutoencoderKL in vqvae/", "VQModel")
    (ldm / "vqvae" / "config.json").write_text(json.dumps(cfg))
    for f in (ldm / "class_embedder").iterdir():
        f.unlink()
    (ldm / "class_embedder").rmdir()
    _one_line_error("ldm", ldm, "without its class table", "class_embedder/config.json")

    partial = tmp_path / "partial"  # the right layout with a file missing: the files are named
    _tiny_ddpm(partial)
    (partial / "scheduler_config.json").unlink()
    _one_line_error("ddpm", partial, "not found", "scheduler_config.json")


def test_class_embedder_file_is_checked(tmp_path):
    from safetensors.torch import save_file

    ClassEmbedder(4, 8, null_class=4).save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["null_class"] == 4
    assert ClassEmbedder.from_folder(tmp_path).embedding.weight.shape == (5, 8)
    save_file({"embedding.weight": torch.zeros(4, 8)}, str(tmp_path / ClassEmbedder.WEIGHTS))
    with pytest.raises(UserError, match=r"embedding.weight of shape \(5, 8\)"):
        ClassEmbedder.from_folder(tmp_path)


def test_real_images_and_prompts(tmp_path):
    from PIL import Image

    gray = fixtures.real_images(tmp_path / "gray", (1, 16, 16), 3, seed=1)
    rgb = fixtures.real_images(tmp_path / "rgb", (3, 8, 12), 2)
    assert sorted(p.name for p in gray.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert Image.open(gray / "000000.png").mode == "L" and Image.open(rgb / "000001.png").size == (12, 8)
    again = fixtures.real_images(tmp_path / "again", (1, 16, 16), 3, seed=1)
    assert (again / "000002.png").read_bytes() == (gray / "000002.png").read_bytes()
    with pytest.raises(UserError, match="C must be 1 or 3"):
        fixtures.real_images(tmp_path / "bad", (4, 8, 8), 1)

    prompts = fixtures.prompts_file(tmp_path / "p.txt", 70).read_text().splitlines()
    assert len(prompts) == 70 == len(set(prompts))


def test_fixture_sample_size_must_pass_every_level(tmp_path):
    with pytest.raises(UserError, match="multiple of 32"):
        fixtures.write_fixture("ddpm-bedroom", tmp_path, sample_size=16)
    with pytest.raises(UserError, match="unknown fixture"):
        fixtures.write_fixture("imagen", tmp_path)
    assert not any(tmp_path.iterdir())


def test_save_random_equals_fast_random_init(tmp_path):
    """The streamed safetensors file holds exactly what presets.fast_random_init gives the module in memory."""
    from diffusers import UNet2DConditionModel

    from bench.presets import fast_random_init

    config = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8, norm_num_groups=8)
    fixtures.save_random(fixtures._meta("UNet2DConditionModel", config), tmp_path, seed=3)
    loaded = UNet2DConditionModel.from_pretrained(tmp_path, local_files_only=True)
    reference = UNet2DConditionModel(**config)
    fast_random_init(reference, seed=3)
    ref, got = reference.state_dict(), loaded.state_dict()
    assert list(ref) == list(got) and all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """DDPM CIFAR-10 and LDM-4-G at their real architectures (reduced sample size) and the quality-side files,
    through build_all: the one build of real-architecture folders in the fast tier."""
    return fixtures.build_all(tmp_path_factory.mktemp("fixtures"), models=["ddpm-cifar10", "ldm-4-g"],
                              clip_model="ViT-S-32")  # ViT-S-32: open_clip's code path of ViT-B-32, smaller


@pytest.mark.slow   # real-architecture folders: the smoke matrix (CI's slow tier) loads and runs them
def test_real_architecture_cifar_and_ldm_folders(built):
    record = fixtures.fixture_record(built["models"]["ldm-4-g"])
    assert record["weights"] == "random" and (record["real_sample_size"], record["sample_size"]) == (64, 8)
    assert "meaningless" in record["note"] and record["image_size"] == 32

    cifar = load_model("ddpm", str(built["models"]["ddpm-cifar10"]))
    assert sum(p.numel() for p in cifar.unet.parameters()) == 35_746_307
    _shapes_agree(inspect_folder("ddpm", str(built["models"]["ddpm-cifar10"])), cifar)

    info = inspect_folder("ldm", str(built["models"]["ldm-4-g"]))
    assert (info.sample_shape, info.image_shape, info.num_classes, info.null_class) == \
        ((3, 8, 8), (3, 32, 32), 1000, 1000)
    ldm = load_model("ldm", str(built["models"]["ldm-4-g"]))
    _shapes_agree(info, ldm)
    assert ldm.class_embedder.embedding.weight.shape == (1001, 512)
    x, t, labels = torch.randn(1, 3, 8, 8), torch.tensor(500), torch.tensor([207])
    engine = StepEngine.attach(ldm.unet)
    try:
        with torch.no_grad():
            plain = ldm.denoiser(engine)(x, t, labels)  # no engine step set: a plain call
            guided = ldm.denoiser(engine, guidance_scale=1.5)
            with engine.step(Step.full(), keep={2}):
                full = guided(x, t, labels)
            with engine.step(Step.partial(2)):
                partial = guided(x, t, labels)
    finally:
        engine.detach()
    assert torch.isfinite(plain).all() and torch.isfinite(full).all()
    assert torch.allclose(partial, full, atol=1e-3)
    assert len(list(built["real"]["ldm-4-g"].glob("*.png"))) == fixtures.REAL_IMAGES


@pytest.mark.slow   # real-architecture folders: the smoke matrix (CI's slow tier) loads and runs them
def test_build_all_keeps_what_exists(built):
    root = built["prompts"].parent
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = fixtures.build_all(root, models=["ddpm-cifar10", "ldm-4-g"], clip_model="ViT-S-32")
    assert again == built
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp


@pytest.mark.slow   # real-architecture folders: the smoke matrix (CI's slow tier) loads and runs them
def test_torch_fidelity_loads_the_random_inception_file(built):
    from torch_fidelity.utils import create_feature_extractor

    extractor = create_feature_extractor("inception-v3-compat", ["2048", "logits_unbiased"], cuda=False,
                                         feature_extractor_weights_path=str(built["inception"]))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats, logits = extractor(images)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    assert (feats[0] - feats[1]).abs().mean() > 0 and 1e-3 < feats.abs().mean() < 1e3


@pytest.mark.slow   # real-architecture folders: the smoke matrix (CI's slow tier) loads and runs them
def test_open_clip_loads_the_random_file(built):
    import open_clip

    path = built["open_clip"]
    model, _, _ = open_clip.create_model_and_transforms("ViT-S-32", pretrained=str(path))
    saved = torch.load(path, weights_only=True)
    state = model.state_dict()
    assert set(saved) <= set(state) and all(torch.equal(state[k], v) for k, v in saved.items())
    with torch.no_grad():
        text = model.encode_text(open_clip.get_tokenizer("ViT-S-32")(["a cat"]))
        image = model.encode_image(torch.randn(1, 3, 224, 224))
    assert torch.isfinite(text).all() and torch.isfinite(image).all()


@pytest.mark.slow
def test_every_fixture_at_its_real_architecture(tmp_path):
    """All five model folders (LSUN and SD included), loaded and run once: shapes from the configs agree."""
    from bench.models.loading import FolderInfo

    built = fixtures.build_all(tmp_path)
    assert set(built["models"]) == set(fixtures.FIXTURES)
    for name, folder in built["models"].items():
        fx = fixtures.FIXTURES[name]
        info: FolderInfo = inspect_folder(fx.loader, str(folder))
        bundle = load_model(fx.loader, str(folder))
        _shapes_agree(info, bundle)
        x, t = torch.randn(2, *info.sample_shape), torch.tensor(500)
        if info.conditioning == "text":
            cond = bundle.encode_prompts(["a red fox", "a cup of coffee"])
        else:
            cond = torch.tensor([1, 2]) if info.conditioning == "class" else None
        guidance = 7.5 if info.conditioning == "text" else (1.5 if info.null_class is not None else None)
        engine = StepEngine.attach(bundle.unet)
        try:
            denoiser = bundle.denoiser(engine, guidance_scale=guidance)
            with torch.no_grad():
                with engine.step(Step.full(), keep={1}):
                    full = denoiser(x, t, cond)
                with engine.step(Step.partial(1)):
                    partial = denoiser(x, t, cond)
                images = bundle.decode(full)
        finally:
            engine.detach()
        assert torch.isfinite(full).all() and torch.allclose(partial, full, atol=1e-3), name
        assert tuple(images.shape[1:]) == info.image_shape and torch.isfinite(images).all(), name
        record = fixtures.fixture_record(folder)
        assert record["sample_size"] == fx.sample_size and record["real_sample_size"] == fx.real_sample_size
        del bundle
    assert (built["real"]["sd-v1.5"] / "000000.png").exists()
