import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def tiny_unet():
    from bench.models.tiny import tiny_unet2d

    return tiny_unet2d()


@pytest.fixture
def tiny_class_unet():
    from bench.models.tiny import tiny_unet2d

    return tiny_unet2d(num_class_embeds=11)


@pytest.fixture(scope="session")
def tiny_sd():
    from bench.models.tiny import tiny_sd_pipeline

    return tiny_sd_pipeline()
