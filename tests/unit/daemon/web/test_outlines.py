"""Drawing an automatic outline for review: the slice the mask covers most, enlarged, with the
outline on the mask's border and nowhere else. (The outlines of a real case, on the T2W and
the DWI, and their review through the web API: tests/integration/test_auto_segmentation.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from PIL import Image

from daemon.web.outlines import MIN_SIDE_PX, OUTLINE_RGB, OutlineError, render_outline


def _picture(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_outline_is_drawn_on_the_border_of_the_largest_slice_of_the_mask() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.normal(100.0, 10.0, size=(5, 40, 48)).astype(np.float32)
    mask = np.zeros((5, 40, 48), dtype=np.uint8)
    mask[1, 10:14, 10:14] = 1  # a small piece on slice 1
    mask[3, 12:24, 20:32] = 1  # the tumour's largest cross-section: slice 3
    image = sitk.GetImageFromArray(pixels)
    png = render_outline(image, sitk.GetImageFromArray(mask))
    rgb = _picture(png)
    factor = -(-MIN_SIDE_PX // 40)
    assert rgb.shape == (40 * factor, 48 * factor, 3)
    yellow = np.all(rgb == OUTLINE_RGB, axis=-1)
    rows, columns = np.nonzero(yellow)
    # on slice 3's square, scaled: its first and last rows and columns are outline
    assert (rows.min(), rows.max()) == (12 * factor, 24 * factor - 1)
    assert (columns.min(), columns.max()) == (20 * factor, 32 * factor - 1)
    inner = yellow[13 * factor : 23 * factor, 21 * factor : 31 * factor]
    assert not inner.any()  # an outline, not a filled region: the image shows through
    grey = rgb[~yellow]
    assert (grey[:, 0] == grey[:, 1]).all()  # the rest is the greyscale slice


def test_a_mask_off_the_images_is_an_error_not_an_empty_picture() -> None:
    image = sitk.GetImageFromArray(np.ones((3, 16, 16), dtype=np.float32))
    empty = sitk.GetImageFromArray(np.zeros((3, 16, 16), dtype=np.uint8))
    with pytest.raises(OutlineError, match="does not lie on these images"):
        render_outline(image, empty)
