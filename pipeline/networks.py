"""Signature networks (MONAI; torchvision is not available here) and their weights.

- response signatures (science A): a 2D DenseNet121 on one 256 x 256 slice per sequence;
- distant-metastasis signatures (science B): a 2D ResNet18 whose 3 input channels come from the
  20-slice crop stack through a 1 x 1 convolution;
- a vision Transformer backbone may replace either (science C).
Weights come only from local files (no hub access), loaded with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.networks.nets.densenet import DenseNet121
from monai.networks.nets.resnet import resnet18
from monai.networks.nets.vit import ViT
from numpy.typing import NDArray
from torch import nn

from pipeline.errors import ModelError, PipelineInputError

Backbone = Literal["densenet121", "resnet18", "vit"]
# each backbone's blocks a heat map may read, from the last convolutional one (their outputs
# feed no in-place operation), with how much each shrinks the input (its stride)
_HEAT_MAP_BLOCKS = {
    "densenet121": (("features.denseblock4", 32), ("features.denseblock3", 16),
                    ("features.denseblock2", 8), ("features.denseblock1", 4)),
    "resnet18": (("layer4", 16), ("layer3", 8), ("layer2", 4), ("layer1", 2)),  # MONAI's
}  # fmt: skip
# the last convolutional block of each backbone (science A's Grad-CAM layer)
GRADCAM_LAYERS = {backbone: blocks[0][0] for backbone, blocks in _HEAT_MAP_BLOCKS.items()}
MIN_HEAT_MAP_CELLS = 8


def heat_map_layer(backbone: str, image_size: int) -> str:
    """The block a heat map reads for an input of ``image_size``: the last one whose map has at
    least :data:`MIN_HEAT_MAP_CELLS` cells a side (DenseNet121's last block of a 256-pixel input
    is 8 x 8, science A's layer; of a 32-pixel one 1 x 1, a map with no place in it; at 4 x 4
    a cell is an eighth of the slice, wider than most restaging tumours), else the shallowest
    listed."""
    blocks = _HEAT_MAP_BLOCKS[backbone]
    for name, stride in blocks:
        if image_size // stride >= MIN_HEAT_MAP_CELLS:
            return name
    return blocks[-1][0]


def _backbone(name: Backbone, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    """``width`` scales the channels (1.0: the published network; 0.25: 1/16 of the work)."""
    if not 0.0 < width <= 4.0:
        raise ValueError(f"width must be in (0, 4], got {width}")
    if name == "densenet121":
        return DenseNet121(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=2,
            init_features=max(8, round(64 * width)),
            growth_rate=max(4, round(32 * width)),
        )
    if name == "resnet18":
        return resnet18(
            spatial_dims=2, n_input_channels=in_channels, num_classes=2, widen_factor=width
        )
    if name == "vit":
        return _ViTClassifier(in_channels, image_size)
    raise ValueError(f"unknown backbone {name!r}: use densenet121, resnet18 or vit")


class _ViTClassifier(nn.Module):
    """MONAI's ViT in classification mode, returning logits only."""

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.vit = ViT(
            in_channels=in_channels,
            img_size=(image_size, image_size),
            patch_size=(16, 16),
            spatial_dims=2,
            classification=True,
            num_classes=2,
            hidden_size=192,
            mlp_dim=768,
            num_layers=4,
            num_heads=3,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.vit(x)[0]
        return logits


class StackToChannels(nn.Module):
    """Science B: a 1 x 1 convolution maps the slice stack to 3 channels for a 2D backbone."""

    def __init__(self, depth: int, backbone: nn.Module) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(depth, 3, kernel_size=1)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.backbone(self.reduce(x))
        return out


def response_network(
    backbone: Backbone = "densenet121", image_size: int = 256, width: float = 1.0
) -> nn.Module:
    """Science A's per-sequence network: one slice in, logits of (poor, good) response out."""
    return _backbone(backbone, 1, image_size, width)


def dm_network(
    backbone: Backbone = "resnet18", depth: int = 20, image_size: int = 112, width: float = 1.0
) -> nn.Module:
    """Science B's network: a (depth, 112, 112) crop stack in, logits of (no DM, DM) out."""
    return StackToChannels(depth, _backbone(backbone, 3, image_size, width))


def save_weights(model: nn.Module, path: Path) -> None:
    """Write the model's state dict (tensors only, safe to load with weights_only)."""
    torch.save(model.state_dict(), path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load local weights into ``model``; :class:`ModelError` when they do not fit."""
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise ModelError(f"weights in {path} do not fit this network: {exc}") from exc
    return model


def device() -> torch.device:
    """The GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_probability(
    model: nn.Module, inputs: NDArray[np.floating], batch_size: int = 16
) -> NDArray[np.float32]:
    """P(class 1) for each input (N, C, H, W), in eval mode, batched, without gradients."""
    if inputs.ndim != 4:
        raise PipelineInputError(f"inputs must be (N, C, H, W), got shape {inputs.shape}")
    where = device()
    model = model.to(where).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = torch.as_tensor(
                np.asarray(inputs[start : start + batch_size]), dtype=torch.float32
            )
            logits = model(batch.to(where))
            out.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def ensemble_probability(
    members: Sequence[nn.Module], inputs: NDArray[np.floating], batch_size: int = 16
) -> NDArray[np.float32]:
    """The mean of the ``members``' P(class 1) for each input (N, C, H, W): a signature made by
    the fold networks of a cross-validation."""
    if not members:
        raise ModelError("an ensemble needs at least one network")
    each = np.stack([predict_probability(m, inputs, batch_size) for m in members])
    result: NDArray[np.float32] = each.mean(axis=0).astype(np.float32)
    return result


def penultimate_features(
    model: nn.Module, inputs: NDArray[np.floating], batch_size: int = 16
) -> NDArray[np.float32]:
    """The input of the network's last linear layer (its deep features), per input (science D)."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ModelError("the network has no linear layer to take features before")
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured.append(args[0].detach().flatten(1).cpu())

    hook = linear[-1].register_forward_hook(keep)
    try:
        predict_probability(model, inputs, batch_size)
    finally:
        hook.remove()
    return torch.cat(captured).numpy().astype(np.float32)


def to_tensor(slices: NDArray[np.floating]) -> NDArray[np.float32]:
    """Science A slices (N, H, W) in 0-255 as network inputs (N, 1, H, W) in about -1..1.

    Training and scoring both call this, so the scaling cannot differ between them."""
    array = np.asarray(slices, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"slices must be (N, H, W), got shape {array.shape}")
    return (array[:, None] / 127.5 - 1.0).astype(np.float32)
