"""Class activation maps: where a network found the evidence for a class, on the input's grid.

Two maps, both our own implementation:

- :func:`gradcam` (Selvaraju et al. 2017): channel weights are the spatial mean of the class
  score's gradient at the target layer; the map is ReLU(sum of weighted activations). What
  ../shared/science.md A names, on the last convolutional layer of a 256-pixel input (8 x 8).
- :func:`layercam` (Jiang et al. 2021, LayerCAM): every activation weighted by its own positive
  gradient, so a block earlier than the last still gives a map of the evidence. What larc draws
  (:meth:`pipeline.bundle.Bundle.heat_maps`), on the last block with 8 cells a side
  (:func:`pipeline.networks.heat_map_layer`). Measured on the demo bundle's 36 held-out
  patients, six signatures each, the share of the heat within 10 mm of the tumour, a region
  that covers 12 % of the slice: Grad-CAM of the good-response class on a 4 x 4 block, what
  larc drew before, 11 %; LayerCAM of the predicted class 38 % (the same networks with
  untrained weights 24 %). An occlusion map of the three post-treatment networks: 36 %.

Both are upsampled bilinearly to the input and scaled to [0, 1]; by default they show the
evidence for the class the network predicts. :func:`heat_near_mask` measures how much of a map
lies near the tumour. (MONAI's GradCAM, called on MONAI's ResNet18 in the toy test, gave maps
that did not point at the evidence; these do, and the tests check it.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.nn import functional

from pipeline.errors import PipelineInputError


def _activation_and_gradient(
    model: nn.Module, image: NDArray[np.floating], target_layer: str, class_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target layer's activation (C, h, w) and the class score's gradient there; the class
    is the predicted one when ``class_index`` is None."""
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
        logits = model(batch)[0]
        chosen = int(logits.argmax()) if class_index is None else class_index
        logits[chosen].backward()
    finally:
        for hook in hooks:
            hook.remove()
    return captured["activation"][0].detach(), captured["gradient"][0].detach()


def _scaled(cam: torch.Tensor, shape: tuple[int, ...]) -> NDArray[np.float32]:
    cam = functional.interpolate(cam[None, None], size=shape, mode="bilinear", align_corners=False)
    return scaled_0_1(cam[0, 0].cpu().numpy())


def scaled_0_1(values: NDArray[np.floating]) -> NDArray[np.float32]:
    """A heat map scaled to [0, 1] (min to max); all zeros when it has no place in it (one
    cell, or equal cells: upsampled, they differ by rounding only)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-5 * abs(high):
        return np.zeros(values.shape, dtype=np.float32)
    scaled: NDArray[np.float32] = ((values - low) / (high - low)).astype(np.float32)
    return scaled


def predicted_class(probability: float) -> int:
    """The class a two-class network's P(class 1) predicts (1 above 0.5): the one whose
    evidence a heat map shows, and its caption names."""
    return 1 if probability > 0.5 else 0


def gradcam(
    model: nn.Module,
    image: NDArray[np.floating],
    target_layer: str,
    class_index: int | None = 1,
) -> NDArray[np.float32]:
    """Grad-CAM in [0, 1] with the input's (H, W), for ``image`` (C, H, W) and ``class_index``
    (None: the predicted class). ``target_layer`` names the module (e.g.
    ``pipeline.networks.GRADCAM_LAYERS``)."""
    activation, gradient = _activation_and_gradient(model, image, target_layer, class_index)
    weights = gradient.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * activation).sum(dim=0))
    return _scaled(cam, image.shape[1:])


def layercam(
    model: nn.Module,
    image: NDArray[np.floating],
    target_layer: str,
    class_index: int | None = None,
) -> NDArray[np.float32]:
    """LayerCAM in [0, 1] with the input's (H, W): ReLU(sum over channels of activation times
    its positive gradient), for ``class_index`` (None: the predicted class)."""
    activation, gradient = _activation_and_gradient(model, image, target_layer, class_index)
    cam = torch.relu((torch.relu(gradient) * activation).sum(dim=0))
    return _scaled(cam, image.shape[1:])


def heat_near_mask(
    heat: NDArray[np.floating],
    mask: NDArray[np.integer] | NDArray[np.bool_],
    spacing_mm: tuple[float, float],
    within_mm: float = 10.0,
) -> tuple[float, float]:
    """How much of a heat map lies near the tumour: the share of the map's mass above its median
    within ``within_mm`` of ``mask``, and the share of the slice that region covers (what a map
    with no place in it would score). ``heat`` (any grid over the mask's field of view) is
    resized bilinearly onto the ``mask``'s grid (rows, columns; ``spacing_mm`` (row, column))."""
    inside = np.asarray(mask) > 0
    if not inside.any():
        raise PipelineInputError("the tumour mask is empty")
    rows, cols = inside.shape
    image = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
    on_grid = np.asarray(image.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float64)
    near = ndimage.distance_transform_edt(~inside, sampling=spacing_mm) <= within_mm
    mass = np.clip(on_grid - np.median(on_grid), 0, None)
    total = float(mass.sum())
    share = float(mass[near].sum() / total) if total > 0 else 0.0
    return share, float(near.mean())
