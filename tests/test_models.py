"""Model loading from local folders only: round trips through save_pretrained, clear errors for missing weights."""
import pytest
import torch

from bench.models import load_model
from bench.models.tiny import DDPM_SCHEDULER, tiny_unet2d
from flexiffusion.errors import UserError


def test_ddpm_folder_round_trip(tmp_path):
    unet = tiny_unet2d()
    unet.save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    from diffusers import DDPMScheduler

    DDPMScheduler.from_config(DDPM_SCHEDULER).save_pretrained(tmp_path / "scheduler")
    bundle = load_model("ddpm", str(tmp_path))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(bundle.unet(x, 5).sample, unet(x, 5).sample)
    assert bundle.sample_shape == (1, 16, 16) and bundle.conditioning == "none"
    assert bundle.scheduler_config["beta_schedule"] == "linear"


def test_sd_folder_round_trip(tmp_path, tiny_sd):
    tiny_sd.save_pretrained(tmp_path)
    bundle = load_model("sd", str(tmp_path))
    assert bundle.conditioning == "text" and bundle.sample_shape == (4, 16, 16)
    cond = bundle.encode_prompts(["a cat"])
    assert cond["prompt_embeds"].shape == (1, 77, 32)


@pytest.mark.parametrize("kind", ["ddpm", "ldm", "sd"])
def test_missing_weights_name_the_files(tmp_path, kind):
    with pytest.raises(UserError) as err:
        load_model(kind, str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "not found" in msg and "diffusion_pytorch_model.safetensors" in msg and "\n" not in msg


def test_missing_hub_id_is_not_downloaded():
    with pytest.raises(UserError, match="no download happens here"):
        load_model("ddpm", "google/ddpm-cifar10-32-definitely-not-cached")


def test_unknown_model():
    with pytest.raises(UserError, match="unknown model"):
        load_model("imagen")
