"""The preprocessing configuration: every parameter of ../shared/science.md A and B, by name.

A model bundle stores the configuration it was trained with; inference refuses a bundle whose
configuration differs from the one it would use, so training and scoring cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from dicom_io.masks import DEFAULT_ROI_PATTERN

PREPROCESS_SCHEMA = 1


class PreprocessConfig(BaseModel):
    """How a case's images become model inputs. Defaults are the studies' values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n4: bool = Field(default=True, description="N4 bias-field correction of T2W, DWI and CE-T1.")
    n4_shrink_factor: int = Field(default=4, ge=1, le=16, description="N4 shrink factor.")
    n4_iterations: tuple[int, ...] = Field(
        default=(20, 20, 20, 20), description="N4 iterations per fitting level."
    )
    n4_margin_mm: float = Field(
        default=40.0,
        gt=0,
        description="Margin around the VOI (mm) of the region N4 and the model inputs see.",
    )
    slice_size: int = Field(
        default=256, ge=16, le=1024, description="Science A: the largest slice is resized to this."
    )
    stack_size: int = Field(
        default=112, ge=16, le=512, description="Science B: each slice crop is resized to this."
    )
    stack_depth: int = Field(
        default=20, ge=1, le=100, description="Science B: slices in the crop stack (zero padded)."
    )
    roi_pattern: str = Field(
        default=DEFAULT_ROI_PATTERN,
        description="Regex (case-insensitive) choosing the tumour ROI of an RTSTRUCT.",
    )
    adc_threshold: float = Field(
        default=1.0, ge=0, description="DWI signal at or below which a voxel's ADC is 0."
    )
    stack_fov_mm: float | None = Field(
        default=None,
        gt=0,
        le=400,
        description=(
            "Science B's crop: unset, each slice's tumour bounding box resized to stack_size "
            "(the published recipe, which hides the tumour's size); a number, one square of "
            "this many mm around the tumour's centre on every slice, so that the DM networks "
            "see its size and its contrast with the tissue around it."
        ),
    )

    @property
    def fingerprint(self) -> str:
        """Short hash of the configuration (and its schema): equal means same model inputs."""
        # a setting added later counts only when it is set: older bundles keep their fingerprint
        later = {"stack_fov_mm"} if self.stack_fov_mm is None else set()
        text = json.dumps(
            {"schema": PREPROCESS_SCHEMA, **self.model_dump(exclude=later)}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]
