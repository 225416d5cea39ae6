"""The embedded domain classifier: a small CNN on 16x16x1 digits, the backbone of the "digits-cnn" feature extractor.

Input: float NCHW in [-1, 1] or uint8 NCHW in 0..255 (converted).  ``forward`` returns logits; ``features`` the
128-d penultimate activations used for FID / KID / precision-recall.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.embedded.data import RESOLUTION, from_uint8

FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
        )
        self.fc = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """uint8 -> [-1, 1] float; checks the 1x16x16 shape."""
        if x.dtype == torch.uint8:
            x = from_uint8(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, RESOLUTION, RESOLUTION):
            raise ValueError(f"DigitClassifier expects (N, 1, {RESOLUTION}, {RESOLUTION}) input, got {tuple(x.shape)}")
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.prepare(x)).flatten(1)
        return F.relu(self.fc(h))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(self.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


@torch.no_grad()
def predict(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, softmax confidence) for each image, in eval mode."""
    was_training = model.training
    model.eval()
    preds, confs = [], []
    for i in range(0, images.shape[0], batch_size):
        p = model(images[i:i + batch_size]).softmax(-1)
        c, k = p.max(-1)
        preds.append(k)
        confs.append(c)
    model.train(was_training)
    return torch.cat(preds), torch.cat(confs)


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    pred, _ = predict(model, images)
    return (pred == labels).float().mean().item()


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (background -1 fills in); digits are not flipped."""
    n = x.shape[0]
    pad = F.pad(x, [max_shift] * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    out = torch.empty_like(x)
    size = x.shape[-1]
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size]
    return out


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 30, seed: int = 0,
                     batch_size: int = 64, lr: float = 1e-3, progress: bool = True) -> DigitClassifier:
    """Adam, cosine learning rate, +-1 pixel random shifts; deterministic given ``seed``."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    model.train()
    for _ in tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = random_shift(images[idx], gen)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def load_classifier_weights(path) -> DigitClassifier:
    """A :class:`DigitClassifier` (eval mode) with the weights of a safetensors file."""
    from safetensors.torch import load_file

    model = DigitClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()
