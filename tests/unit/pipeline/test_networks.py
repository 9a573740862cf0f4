"""Signature networks: shapes, local weights, determinism, and heat maps (Grad-CAM, LayerCAM)
that find the evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError, PipelineInputError
from pipeline.gradcam import gradcam, heat_near_mask, layercam
from pipeline.networks import (
    GRADCAM_LAYERS,
    dm_network,
    heat_map_layer,
    load_weights,
    predict_probability,
    response_network,
    save_weights,
)


def test_response_and_dm_networks_take_the_science_inputs() -> None:
    torch.manual_seed(0)
    slices = np.random.default_rng(0).normal(size=(2, 1, 256, 256)).astype(np.float32)
    stacks = np.random.default_rng(1).normal(size=(2, 20, 112, 112)).astype(np.float32)
    p_good = predict_probability(response_network("densenet121"), slices)
    p_dm = predict_probability(dm_network("resnet18"), stacks)
    assert p_good.shape == p_dm.shape == (2,)
    assert ((p_good >= 0) & (p_good <= 1)).all()
    vit = predict_probability(response_network("vit", image_size=64), slices[:, :, :64, :64])
    assert vit.shape == (2,)


def test_weights_round_trip_from_a_local_file_and_eval_is_deterministic(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = dm_network("resnet18")
    path = tmp_path / "dm.pt"
    save_weights(model, path)
    torch.manual_seed(2)
    fresh = load_weights(dm_network("resnet18"), path)
    stacks = np.random.default_rng(3).normal(size=(3, 20, 112, 112)).astype(np.float32)
    first = predict_probability(model, stacks)
    assert np.array_equal(first, predict_probability(fresh, stacks))
    assert np.array_equal(first, predict_probability(fresh, stacks))


def test_weights_for_another_network_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "response.pt"
    save_weights(response_network("resnet18", image_size=64), path)
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(dm_network("resnet18"), path)
    with pytest.raises(ModelError, match="does not exist"):
        load_weights(dm_network("resnet18"), tmp_path / "missing.pt")


def _toy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Noise images; class 1 carries a bright 12 x 12 square somewhere."""
    images = rng.normal(0, 1, (n, 1, 64, 64)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    corners = []
    for i in range(n):
        r, c = (int(v) for v in rng.integers(4, 48, 2))
        corners.append((r, c))
        if labels[i]:
            images[i, 0, r : r + 12, c : c + 12] += 3.0
    return images, labels, corners


@pytest.mark.slow
def test_gradcam_points_at_the_evidence() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = response_network("resnet18", image_size=64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):  # median heat ratio 2.67 (60 steps: 3.15; the test needs > 2)
        images, labels, _ = _toy(rng, 16)
        loss = torch.nn.functional.cross_entropy(
            model(torch.as_tensor(images)), torch.as_tensor(labels)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    images, labels, corners = _toy(np.random.default_rng(7), 40)
    positive = labels == 1
    probability = predict_probability(model, images)
    assert probability[positive].mean() > probability[~positive].mean() + 0.3
    ratios: dict[str, list[float]] = {"gradcam": [], "layercam": []}
    for i in np.flatnonzero(positive)[:6]:
        r, c = corners[i]
        inside = np.zeros((64, 64), dtype=bool)
        inside[r : r + 12, c : c + 12] = True
        for method, heat in (
            ("gradcam", gradcam(model, images[i], GRADCAM_LAYERS["resnet18"])),
            ("layercam", layercam(model, images[i], heat_map_layer("resnet18", 64))),
        ):
            assert heat.shape == (64, 64)
            assert 0.0 <= heat.min() <= heat.max() <= 1.0
            ratios[method].append(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))
    assert np.median(ratios["gradcam"]) > 2.0, ratios
    assert np.median(ratios["layercam"]) > 2.0, ratios


def test_gradcam_on_densenet_has_the_slice_shape() -> None:
    torch.manual_seed(0)
    image = np.random.default_rng(0).normal(size=(1, 256, 256)).astype(np.float32)
    heat = gradcam(response_network("densenet121"), image, GRADCAM_LAYERS["densenet121"])
    assert heat.shape == (256, 256)


def test_heat_maps_read_a_block_whose_map_has_places_in_it() -> None:
    # the published size: science A's last block (DenseNet121 8 x 8 at 256); small inputs: an
    # earlier block with 8 cells a side, never a map of one cell
    assert heat_map_layer("densenet121", 256) == GRADCAM_LAYERS["densenet121"]
    assert heat_map_layer("resnet18", 128) == GRADCAM_LAYERS["resnet18"]
    assert heat_map_layer("resnet18", 112) == "layer3"  # 7 x 7 at the last block
    assert heat_map_layer("resnet18", 32) == "layer2"
    assert heat_map_layer("densenet121", 64) == "features.denseblock2"
    assert heat_map_layer("densenet121", 32) == "features.denseblock1"
    assert heat_map_layer("densenet121", 16) == "features.denseblock1"  # the shallowest
    torch.manual_seed(0)
    model = response_network("densenet121", 32, 0.25)
    image = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    flat = layercam(model, image, GRADCAM_LAYERS["densenet121"])  # 1 x 1 at 32 pixels
    placed = layercam(model, image, heat_map_layer("densenet121", 32))
    assert flat.std() < 1e-6  # one cell: the same everywhere
    assert placed.std() > 0.05


def test_heat_near_mask_measures_the_share_of_heat_by_the_tumour() -> None:
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[18:22, 10:14] = 1  # spacing 2 x 1 mm: 10 mm is 5 rows or 10 columns
    spacing = (2.0, 1.0)
    on_tumour = np.zeros((20, 30))  # another grid over the same field of view
    on_tumour[9:11, 5:7] = 1.0
    share, area = heat_near_mask(on_tumour, mask, spacing)
    assert share > 0.95
    assert area == pytest.approx(((mask > 0) | _near(mask, spacing)).mean(), abs=1e-9)
    elsewhere = np.zeros((20, 30))
    elsewhere[2:4, 24:28] = 1.0
    assert heat_near_mask(elsewhere, mask, spacing)[0] < 0.05
    assert heat_near_mask(np.ones((20, 30)), mask, spacing)[0] == 0.0  # no place in it
    with pytest.raises(PipelineInputError, match="empty"):
        heat_near_mask(on_tumour, np.zeros_like(mask), spacing)


def _near(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    rows, cols = np.indices(mask.shape)
    near = np.zeros(mask.shape, dtype=bool)
    for r, c in zip(*np.nonzero(mask), strict=True):
        near |= np.hypot((rows - r) * spacing[0], (cols - c) * spacing[1]) <= 10.0
    return near


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_inference_and_gradcam_match_the_cpu() -> None:
    torch.manual_seed(5)
    model = response_network("densenet121", image_size=64, width=0.5)
    slices = np.random.default_rng(5).normal(size=(3, 1, 64, 64)).astype(np.float32)
    on_gpu = predict_probability(model, slices)  # device() picks the GPU
    assert next(model.parameters()).is_cuda
    heat_gpu = gradcam(model, slices[0], GRADCAM_LAYERS["densenet121"])
    model.cpu()
    with torch.no_grad():
        on_cpu = torch.softmax(model.eval()(torch.as_tensor(slices)), dim=1)[:, 1].numpy()
    assert np.allclose(on_gpu, on_cpu, atol=1e-4)
    heat_cpu = gradcam(model, slices[0], GRADCAM_LAYERS["densenet121"])
    assert np.allclose(heat_gpu, heat_cpu, atol=1e-3)
