"""LAION's watermark classifier in plain torch: EfficientNet-B3 with a three-layer head.

LAION-5B was filtered with a timm `efficientnet_b3a` (`num_classes=2`) whose classifier was
replaced by Linear(1536, 625) -> ReLU -> Dropout(0.3) -> Linear(625, 256) -> ReLU ->
Linear(256, 2); images are resized to 256x256 (bilinear) and normalised with ImageNet's
mean and std, and softmax column 0 is the probability of a watermark (`pwatermark`; LAION kept
images below 0.8). timm needs torchvision, which does not load against every torch build, so
the network is written out here with timm's exact module names and shapes: LAION's
checkpoint (`watermark_model_v1.pt`, or a safetensors conversion of it) loads with
`strict=True`, and any other checkpoint is refused with one line naming the file.

`WatermarkClassifier` is a plain callable (load once, call on batches) that imports no engine
code, so a process pool or Ray's `map_batches` can hold one per worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datakit.io.errors import UserError

IMAGE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

# EfficientNet-B3 stages: (block type, repeats, kernel, stride, expansion, output channels).
# B0's stages scaled by width 1.2 and depth 1.4, channels rounded to multiples of 8.
_STAGES = (
    ("ds", 2, 3, 1, 1, 24),
    ("ir", 3, 3, 2, 6, 32),
    ("ir", 3, 5, 2, 6, 48),
    ("ir", 5, 3, 2, 6, 96),
    ("ir", 5, 5, 1, 6, 136),
    ("ir", 6, 5, 2, 6, 232),
    ("ir", 2, 3, 1, 6, 384),
)
_STEM, _FEATURES = 40, 1536


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm followed by an optional SiLU (timm's module of the same name)."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """Channel gate from the pooled features; its width is a quarter of the block's input."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv -> squeeze-excite -> pointwise conv (the first stage's block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.se = SqueezeExcite(cin, cin // 4)
        self.conv_pw = _conv(cin, cout)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return out + x if self.skip else out


class InvertedResidual(nn.Module):
    """Pointwise expansion -> depthwise conv -> squeeze-excite -> pointwise projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.conv_pw = _conv(cin, mid)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid, cin // 4)
        self.conv_pwl = _conv(mid, cout)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(self.se(out)))
        return out + x if self.skip else out


class EfficientNetB3Watermark(nn.Module):
    """timm's `efficientnet_b3a` body with LAION's watermark head; returns 2 logits per image
    (column 0: watermark, column 1: clear)."""

    def __init__(self):
        super().__init__()
        self.conv_stem = _conv(3, _STEM, 3, 2)
        self.bn1 = BatchNormAct2d(_STEM)
        stages, cin = [], _STEM
        for kind, repeats, kernel, stride, expansion, cout in _STAGES:
            blocks = []
            for index in range(repeats):
                step = stride if index == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, kernel, step) if kind == "ds"
                              else InvertedResidual(cin, cout, kernel, step, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, _FEATURES)
        self.bn2 = BatchNormAct2d(_FEATURES)
        self.classifier = nn.Sequential(
            nn.Linear(_FEATURES, 625), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(625, 256), nn.ReLU(), nn.Linear(256, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean((2, 3)))


def find_weights(model: str | os.PathLike) -> Path:
    """The weights file: `model` itself, or the single weights file in the folder `model`
    (`model.safetensors` preferred when there are several).

    Raises:
        UserError: nothing usable at `model`.
    """
    path = Path(model)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"--watermark-model {path}: no such file or folder")
    found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    preferred = [p for p in found if p.name == "model.safetensors"]
    if preferred or len(found) == 1:
        return (preferred or found)[0]
    if not found:
        raise UserError(f"--watermark-model {path}: no {'/'.join(WEIGHT_SUFFIXES)} file inside")
    names = ", ".join(p.name for p in found)
    raise UserError(f"--watermark-model {path}: several weights files ({names}); name one")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, else from a torch pickle read with
    `weights_only=True` (no code runs); a {"state_dict": ...} wrapper is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(os.fspath(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader error means the file is not usable weights
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--watermark-model {path}: cannot read weights ({detail})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise UserError(f"--watermark-model {path}: not a state dict of tensors")
    return state


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--watermark-device: unknown device {device!r}") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available()
                                    or (resolved.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--watermark-device {device}: no such CUDA device here")
    return resolved


class WatermarkClassifier:
    """LAION's watermark classifier, loaded once, called on batches of RGB images.

    Args:
        model: a weights file (.safetensors, or .pt/.pth read with `weights_only=True`) or a
            folder holding one.
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:N".
        batch_size: images per forward pass.

    Raises:
        UserError: the file is unreadable, or is not this architecture (names the first
            missing or unexpected key, or the first shape that differs).
    """

    def __init__(self, model: str | os.PathLike, device: str = "auto", batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        path = find_weights(model)
        state = load_state_dict(path)
        network = EfficientNetB3Watermark()
        expected = network.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            problem = (f"missing {missing[0]!r}" if missing else
                       f"unexpected {unexpected[0]!r}" if unexpected else
                       f"{wrong[0]!r} is {tuple(state[wrong[0]].shape)}, expected "
                       f"{tuple(expected[wrong[0]].shape)}")
            raise UserError(f"--watermark-model {path}: not a LAION watermark classifier "
                            f"(efficientnet_b3a with a 1536-625-256-2 head): {problem}")
        network.load_state_dict(state, strict=True)
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.batch_size = batch_size
        self.path = path

    @staticmethod
    def preprocess(image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised float (3, 256, 256), resized as LAION did
        (PIL bilinear, which filters when shrinking)."""
        from PIL import Image

        resized = Image.fromarray(np.ascontiguousarray(image)).convert("RGB").resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        tensor = torch.from_numpy(np.asarray(resized, np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (tensor - mean) / std

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[float]:
        """pwatermark (softmax column 0) of each RGB uint8 image."""
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(i) for i in images[start:start + self.batch_size]])
            logits = self.network(batch.to(self.device)).float()
            scores.extend(logits.softmax(dim=1)[:, 0].cpu().tolist())
        return scores
