"""The automatic segmenter's pieces: its 2.5D input, the quality gate's verdicts (each reason it
declines a mask for), and the overlap and distance figures its training reports."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import torch

from pipeline.segmentation import (
    GateLimits,
    SegmenterConfig,
    dice,
    hd95,
    judge,
    predict_volume,
    with_neighbours,
)

LIMITS = GateLimits(min_volume_ml=0.5, max_volume_ml=50.0, min_mean_probability=0.7)


def _image(shape: tuple[int, int, int] = (10, 40, 40)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros(shape, np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))  # 4 ul voxels
    return image


def _probability(*boxes: tuple[slice, slice, slice], value: float = 0.95) -> np.ndarray:
    out = np.zeros((10, 40, 40), np.float32)
    for box in boxes:
        out[box] = value
    return out


BOX = (slice(3, 7), slice(15, 25), slice(15, 25))  # 400 voxels: 1.6 ml


def test_a_clear_single_tumour_passes_the_gate() -> None:
    found = judge(_probability(BOX), _image(), LIMITS)
    assert found.passed, found.reasons
    assert found.volume_ml == pytest.approx(1.6)
    assert found.components == 1
    assert sitk.GetArrayFromImage(found.mask).sum() == 400


@pytest.mark.parametrize(
    ("probability", "reason"),
    [
        (_probability(), "no tumour found"),
        (_probability((slice(4, 5), slice(18, 20), slice(18, 20))), "tumour volume 0.0 ml"),
        (_probability(BOX, value=0.6), "mean tumour probability 0.60 is below 0.70"),
        (
            _probability(BOX, (slice(3, 7), slice(2, 10), slice(28, 36))),
            "2 separate tumour regions (at most 1)",
        ),
        (
            _probability((slice(3, 7), slice(0, 10), slice(15, 25))),
            "touches the edge of the field of view",
        ),
    ],
    ids=["empty", "tiny", "unsure", "two-regions", "edge"],
)
def test_the_gate_declines_with_a_reason(probability: np.ndarray, reason: str) -> None:
    found = judge(probability, _image(), LIMITS)
    assert not found.passed
    assert any(reason in r for r in found.reasons), found.reasons


def test_only_the_largest_region_is_kept() -> None:
    small = (slice(4, 6), slice(2, 4), slice(30, 32))  # 8 voxels: under 10 % of the largest
    found = judge(_probability(BOX, small), _image(), LIMITS)
    assert found.passed, found.reasons
    assert sitk.GetArrayFromImage(found.mask)[small].sum() == 0


def test_dice_and_hd95_of_known_shapes() -> None:
    a = np.zeros((10, 40, 40), np.uint8)
    b = np.zeros_like(a)
    a[BOX] = 1
    b[3:7, 15:25, 17:27] = 1  # shifted 2 mm along x
    assert dice(a, b) == pytest.approx(2 * 320 / 800)
    assert hd95(a, b, (1.0, 1.0, 4.0)) == pytest.approx(2.0)
    assert dice(a, a) == 1.0
    assert hd95(a, np.zeros_like(a), (1.0, 1.0, 4.0)) == float("inf")


def test_neighbouring_slices_are_the_channels() -> None:
    volume = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    stacked = with_neighbours(volume)
    assert stacked.shape == (4, 3, 2, 2)
    assert stacked[0, :, 0, 0].tolist() == [0, 0, 1]  # the edge repeats
    assert stacked[2, :, 0, 0].tolist() == [1, 2, 3]


def test_inference_covers_any_matrix_with_the_trained_patch() -> None:
    config = SegmenterConfig(channels=(4, 8, 16), patch=32)
    torch.manual_seed(0)
    model = config.network()
    probability = predict_volume(model, np.random.default_rng(0).random((3, 50, 70)), config)
    assert probability.shape == (3, 50, 70)
    assert 0.0 <= float(probability.min()) <= float(probability.max()) <= 1.0


def test_a_fresh_network_starts_from_the_tumour_prior_and_old_manifests_load() -> None:
    """The output bias starts at the prior log-odds, so a fresh network outlines nothing
    rather than half of every slice; a manifest written before DynUNet (no ``architecture``)
    builds the network it was trained with."""
    config = SegmenterConfig(channels=(4, 8, 16), patch=32)
    torch.manual_seed(0)
    probability = predict_volume(config.network(), np.random.default_rng(0).random((2, 32, 32)),
                                 config)  # fmt: skip
    assert float(probability.mean()) < 0.1
    assert SegmenterConfig.from_json(config.to_json()) == config
    old = {"channels": [4, 8], "patch": 32, "residual_units": 1, "context": 1}
    assert SegmenterConfig.from_json(old).architecture == "unet"
    assert type(SegmenterConfig.from_json(old).network()).__name__ == "UNet"
    with pytest.raises(ValueError, match="unknown segmenter architecture"):
        SegmenterConfig(architecture="vnet")
    with pytest.raises(ValueError, match="at least 3 levels"):
        SegmenterConfig(channels=(4, 8))


def _dwi(lesion: tuple[slice, slice, slice], inside: float = 500.0) -> sitk.Image:
    """A high-b DWI on a coarser grid over the same space (2 mm pixels): air around a body of
    100, and a bright lesion (given in the T2W's voxel indices)."""
    voxels = np.zeros((10, 20, 20), np.float32)
    voxels[:, 2:18, 2:18] = 100.0
    z, y, x = lesion
    voxels[z, y.start // 2 : y.stop // 2, x.start // 2 : x.stop // 2] = inside
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((2.0, 2.0, 4.0))
    image.SetOrigin((0.5, 0.5, 0.0))  # pixel centres over the T2W's 1 mm pixel pairs
    return image


def test_an_outline_that_covers_only_part_of_the_dwi_lesion_is_declined() -> None:
    # the outline (BOX, 1.6 ml) matches its DWI lesion: passes, lesion about its own size
    fits = judge(_probability(BOX), _image(), LIMITS, _dwi(BOX))
    assert fits.passed, fits.reasons
    assert fits.dwi_lesion_ratio == pytest.approx(1.0, abs=0.2)
    # a lesion four times larger than the outline: the outline may miss part of the tumour
    large = (slice(2, 9), slice(10, 30), slice(10, 30))
    partial = judge(_probability(BOX), _image(), LIMITS, _dwi(large))
    assert not partial.passed
    assert any("the DWI-bright lesion around the outline is" in r for r in partial.reasons)
    assert partial.dwi_lesion_ratio is not None
    assert partial.dwi_lesion_ratio > 4
    # a tumour that is not DWI-bright (after treatment): nothing to compare, the check is left out
    dark = judge(_probability(BOX), _image(), LIMITS, _dwi(large, inside=120.0))
    assert dark.passed, dark.reasons
    assert dark.dwi_lesion_ratio is None
    # the check can be switched off, and without a DWI it is not made
    off = GateLimits(**{**LIMITS.to_json(), "max_dwi_lesion_ratio": 0.0})
    assert judge(_probability(BOX), _image(), off, _dwi(large)).passed
    assert judge(_probability(BOX), _image(), LIMITS).dwi_lesion_ratio is None
