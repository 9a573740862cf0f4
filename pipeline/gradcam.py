"""Grad-CAM on the last convolutional layer: where the network looked, on the input's grid.

Own implementation (Selvaraju et al.): channel weights are the spatial mean of the class score's
gradient at the target layer; the map is ReLU(sum of weighted activations), upsampled
bilinearly to the input and scaled to [0, 1]. (MONAI's GradCAM, called on MONAI's ResNet18 in the
toy test, gave maps that did not point at the evidence; this one does, and the test checks it.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from pipeline.errors import PipelineInputError


def gradcam(
    model: nn.Module, image: NDArray[np.floating], target_layer: str, class_index: int = 1
) -> NDArray[np.float32]:
    """Heat map in [0, 1] with the input's (H, W), for ``image`` (C, H, W) and ``class_index``.

    ``target_layer`` names the module (e.g. ``pipeline.networks.GRADCAM_LAYERS``).
    """
    if image.ndim != 3:
        raise PipelineInputError(f"image must be (C, H, W), got shape {image.shape}")
    modules = dict(model.named_modules())
    if target_layer not in modules:
        raise PipelineInputError(f"the network has no layer {target_layer!r}")
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        captured["activation"] = output

    def keep_gradient(
        _module: nn.Module, _grad_in: Any, grad_out: tuple[torch.Tensor, ...]
    ) -> None:
        captured["gradient"] = grad_out[0]

    layer = modules[target_layer]
    hooks = [
        layer.register_forward_hook(keep_activation),
        layer.register_full_backward_hook(keep_gradient),
    ]
    try:
        model.eval()
        where = next(model.parameters()).device  # the GPU when the model is there
        batch = torch.as_tensor(np.asarray(image)[None], dtype=torch.float32).to(where)
        model.zero_grad()
        score = model(batch)[0, class_index]
        score.backward()
    finally:
        for hook in hooks:
            hook.remove()
    activation = captured["activation"][0].detach()
    weights = captured["gradient"][0].detach().mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * activation).sum(dim=0))
    cam = functional.interpolate(
        cam[None, None], size=image.shape[1:], mode="bilinear", align_corners=False
    )[0, 0]
    low, high = float(cam.min()), float(cam.max())
    scaled = (cam - low) / (high - low) if high > low else torch.zeros_like(cam)
    result: NDArray[np.float32] = scaled.cpu().numpy().astype(np.float32)
    return result
