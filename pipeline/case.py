"""A case's selected series to model inputs: the one function training and scoring both call.

:func:`prepare_case` takes the series selected in a patient's baseline and/or restaging study
(:mod:`dicom_io.selection`: the daemon's case builder and training select them the same way,
and a case's recorded inputs are exactly these series), reads them with their true geometry,
finds the tumour mask for every sequence (its own mask, else the T2W's carried through physical
space), and builds science A's slices, science B's crop stacks and the VOI measurements.
A piece that cannot be built is recorded in ``problems`` with the reason; the caller decides
whether what is left is enough (:meth:`CaseInputs.require`).

Prepared inputs are small (a few hundred kB) and saved as ``.npz`` without pickle, so a worker
that cannot see the daemon's storage can still score a case from them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from dicom_io.errors import InvalidInputError
from dicom_io.files import read_dicom
from dicom_io.geometry import sort_by_position
from dicom_io.masks import resample_mask, rtstruct_mask, seg_mask
from dicom_io.roles import SeriesRole
from dicom_io.selection import SelectedStudy, SeriesFiles
from dicom_io.series import read_series, split_by_b_value
from pipeline.config import PreprocessConfig
from pipeline.envelope import SequenceFacts, sequence_facts
from pipeline.errors import PipelineInputError
from pipeline.kinds import (
    BASELINE,
    PREFIX,
    RESPONSE_SEQUENCES,
    SIGNATURES,
)
from pipeline.preprocess import (
    FloatArray,
    N4Parameters,
    TumourFeatures,
    adc_from_dwi,
    crop_stack,
    crop_to_voi,
    largest_cross_section,
    measure,
    n4_correct,
    slice_input,
)
from pipeline.timing import Stopwatch

log = logging.getLogger(__name__)

_ROLE_OF = {"T2": SeriesRole.T2W_AX, "DWI": SeriesRole.DWI, "CE": SeriesRole.CE_T1}
# how the envelope and its reasons name a series: "baseline T2W", "restaging CE-T1"
SEQUENCE_NAMES = {
    SeriesRole.T2W_AX: "T2W",
    SeriesRole.DWI: "DWI",
    SeriesRole.ADC: "ADC",
    SeriesRole.CE_T1: "CE-T1",
}
CASE_FORMAT = 2  # 2: with the series facts of the training envelope (caches are keyed by it)
_READABLE_FORMATS = (1, 2)


@dataclass
class SliceInput:
    """Science A's input for one sequence and timepoint, and where it came from."""

    array: FloatArray  # (size, size), 0-255
    series_uid: str
    slice_index: int  # in the series ordered by position
    sop_instance_uid: str  # the image that slice came from ("" for a multi-frame image)
    mask_source: str
    # the slice the network saw before it was normalised and resized (the VOI's region with its
    # margin, at the image's resolution), its tumour mask and pixel spacing (row, column, mm):
    # what the heat map is drawn on (None: prepared by an older larc)
    native: FloatArray | None = None
    native_mask: NDArray[np.uint8] | None = None
    native_spacing: tuple[float, float] | None = None


@dataclass
class StackInput:
    """Science B's input for one sequence (baseline), and where it came from."""

    array: FloatArray  # (depth, size, size), z-scored
    series_uid: str
    mask_source: str


@dataclass
class CaseInputs:
    """Everything the models need from a case's images."""

    config_fingerprint: str
    slices: dict[str, SliceInput] = field(default_factory=dict)  # by signature name
    stacks: dict[str, StackInput] = field(default_factory=dict)  # by sequence (T2, ADC)
    features: dict[str, TumourFeatures] = field(default_factory=dict)  # by timepoint
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage when prepared
    # the facts of each series read ("baseline T2W" ...): what the training envelope checks
    acquisition: dict[str, SequenceFacts] = field(default_factory=dict)

    def require(self, slices: Sequence[str] = (), stacks: Sequence[str] = ()) -> None:
        """Raise :class:`PipelineInputError` naming what is missing and why."""
        lacking = [s for s in slices if s not in self.slices]
        lacking += [f"{s} stack" for s in stacks if s not in self.stacks]
        if lacking:
            why = "; ".join(self.problems) or "not in the case"
            raise PipelineInputError(f"cannot use the case: no {', '.join(lacking)} ({why})")

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz: arrays plus a JSON header, no pickle)."""
        tmp = path.with_name(path.name + ".tmp.npz")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes :meth:`save` writes: what a remote worker receives."""
        header = {
            "format": CASE_FORMAT,
            "config_fingerprint": self.config_fingerprint,
            "slices": {
                k: {**asdict(v), "array": None, "native": None, "native_mask": None}
                for k, v in self.slices.items()
            },
            "stacks": {k: {**asdict(v), "array": None} for k, v in self.stacks.items()},
            "features": {k: asdict(v) for k, v in self.features.items()},
            "problems": self.problems,
            "seconds": self.seconds,
            "acquisition": {k: v.to_json() for k, v in self.acquisition.items()},
        }
        arrays: dict[str, Any] = {f"slice_{k}": v.array for k, v in self.slices.items()}
        arrays |= {f"native_{k}": v.native for k, v in self.slices.items() if v.native is not None}
        arrays |= {f"nativemask_{k}": v.native_mask for k, v in self.slices.items()
                   if v.native_mask is not None}  # fmt: skip
        arrays |= {f"stack_{k}": v.array for k, v in self.stacks.items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.asarray(json.dumps(header)), **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> CaseInputs:
        """Read what :meth:`save` wrote."""
        return cls.from_bytes(path.read_bytes(), str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the prepared inputs") -> CaseInputs:
        """Read what :meth:`to_bytes` gave."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            header = json.loads(str(arrays["header"]))
            if header.get("format") not in _READABLE_FORMATS:
                raise PipelineInputError(f"{name} holds prepared inputs of another format")
            slices = {
                k: SliceInput(**{
                    **v, "array": arrays[f"slice_{k}"],
                    "native": arrays.get(f"native_{k}"),
                    "native_mask": arrays.get(f"nativemask_{k}"),
                    "native_spacing": tuple(v["native_spacing"])
                    if v.get("native_spacing") else None,
                })
                for k, v in header["slices"].items()
            }  # fmt: skip
            stacks = {
                k: StackInput(**{**v, "array": arrays[f"stack_{k}"]})
                for k, v in header["stacks"].items()
            }
        return cls(
            config_fingerprint=header["config_fingerprint"],
            slices=slices,
            stacks=stacks,
            features={k: TumourFeatures(**v) for k, v in header["features"].items()},
            problems=list(header["problems"]),
            seconds=dict(header.get("seconds", {})),
            acquisition={
                k: SequenceFacts.from_json(v) for k, v in header.get("acquisition", {}).items()
            },
        )


class _Study:
    """One study's images and masks, read lazily and at most once."""

    def __init__(self, selected: SelectedStudy, roi_pattern: str, clock: Stopwatch) -> None:
        self.clock = clock
        self.selected = selected
        self.roi_pattern = roi_pattern
        self._images: dict[str, tuple[sitk.Image, list[Dataset]]] = {}
        self._dwi: tuple[sitk.Image, sitk.Image, float, list[Dataset]] | None = None
        self._masks: dict[str, tuple[sitk.Image, str] | None] = {}
        self._b_values: dict[str, tuple[float, ...]] = {}
        # masks carried to another series' grid, by (that series, where they may come from)
        self._carried: dict[tuple[str, tuple[SeriesRole, ...]], tuple[sitk.Image, str]] = {}

    def has(self, role: SeriesRole) -> bool:
        return role in self.selected.images

    def image(self, role: SeriesRole) -> tuple[SeriesFiles, sitk.Image, list[Dataset]]:
        chosen = self.selected.images.get(role)
        if chosen is None:
            raise PipelineInputError(f"no {role.value} series")
        if chosen.series_uid not in self._images:
            with self.clock.stage("read"):
                self._read(chosen, role)
        image, datasets = self._images[chosen.series_uid]
        return chosen, image, datasets

    def _read(self, chosen: SeriesFiles, role: SeriesRole) -> None:
        datasets = sort_by_position([read_dicom(p) for p in chosen.paths])
        if role is SeriesRole.DWI:
            by_b = split_by_b_value(datasets)
            if len(by_b) < 2:
                raise PipelineInputError("the DWI series holds a single b-value")
            values = sorted(by_b)
            self._b_values[chosen.series_uid] = tuple(values)
            b_low, b_high = values[0], values[-1]
            low, high = by_b[b_low], by_b[b_high]
            high = sort_by_position(high)
            self._dwi = (read_series(low), read_series(high), b_high - b_low, high)
            self._images[chosen.series_uid] = (self._dwi[1], high)
        else:
            self._images[chosen.series_uid] = (read_series(datasets), datasets)

    def facts(self) -> dict[SeriesRole, SequenceFacts]:
        """The facts of every image series read so far (:mod:`pipeline.envelope`), with the
        tumour mask on its grid where there is one (its own, else carried from the T2W)."""
        out = {}
        for role, chosen in self.selected.images.items():
            if chosen.series_uid not in self._images:
                continue
            image, datasets = self._images[chosen.series_uid]
            carry = [r for r in (SeriesRole.T2W_AX, SeriesRole.DWI) if r is not role]
            try:
                mask: sitk.Image | None = self.mask_for(role, image, carry)[0]
            except (PipelineInputError, InvalidInputError):
                mask = None
            out[role] = sequence_facts(
                datasets, image, mask, self._b_values.get(chosen.series_uid, ())
            )
        return out

    def dwi_pair(self) -> tuple[sitk.Image, sitk.Image, float]:
        self.image(SeriesRole.DWI)
        if self._dwi is None:  # an enhanced DWI object is read as one volume
            raise PipelineInputError("the DWI series cannot be split by b-value")
        return self._dwi[0], self._dwi[1], self._dwi[2]

    def own_mask(
        self, series: SeriesFiles, datasets: list[Dataset]
    ) -> tuple[sitk.Image, str] | None:
        """The mask selected for this series (RTSTRUCT first), or ``None``."""
        if series.series_uid not in self._masks:
            with self.clock.stage("mask"):
                self._masks[series.series_uid] = self._read_mask(series, datasets)
        return self._masks[series.series_uid]

    def _read_mask(
        self, series: SeriesFiles, datasets: list[Dataset]
    ) -> tuple[sitk.Image, str] | None:
        for mask in self.selected.masks_on(series.series_uid):
            ds = read_dicom(mask.paths[0])
            _same_frame(ds, mask, datasets[0], series)
            if mask.role is SeriesRole.RTSTRUCT:
                return rtstruct_mask(ds, datasets, self.roi_pattern), f"RTSTRUCT {mask.series_uid}"
            return seg_mask(ds, datasets), f"SEG {mask.series_uid}"
        return None

    def mask_for(
        self, role: SeriesRole, image: sitk.Image, carry_from: Sequence[SeriesRole]
    ) -> tuple[sitk.Image, str]:
        """This sequence's own mask, else the first of ``carry_from``'s carried to its grid."""
        series, _, datasets = self.image(role)
        own = self.own_mask(series, datasets)
        if own is not None:
            return own
        key = (series.series_uid, tuple(carry_from))
        if key not in self._carried:  # slices, stacks and the envelope's facts all ask
            self._carried[key] = self._carry(role, image, carry_from)
        return self._carried[key]

    def _carry(
        self, role: SeriesRole, image: sitk.Image, carry_from: Sequence[SeriesRole]
    ) -> tuple[sitk.Image, str]:
        for other in carry_from:
            if not self.has(other):
                continue
            other_series, _, other_datasets = self.image(other)
            found = self.own_mask(other_series, other_datasets)
            if found is not None:
                with self.clock.stage("mask"):
                    carried = resample_mask(found[0], image)
                if not sitk.GetArrayViewFromImage(carried).any():
                    raise PipelineInputError(
                        f"the {other.value} mask does not overlap the {role.value} images"
                    )
                return carried, f"{found[1]} on {other.value}, carried"
        raise PipelineInputError(f"no tumour mask for the {role.value} series")


def _mask_frame(ds: Dataset) -> str:
    """The frame of reference a mask is drawn in ("" when it does not say)."""
    if "ReferencedFrameOfReferenceSequence" in ds:  # RTSTRUCT
        items = ds.ReferencedFrameOfReferenceSequence
        return str(items[0].get("FrameOfReferenceUID", "")) if items else ""
    return str(ds.get("FrameOfReferenceUID", ""))  # SEG


def _same_frame(mask: Dataset, files: SeriesFiles, image: Dataset, series: SeriesFiles) -> None:
    """``InvalidInputError`` when the mask is drawn in another frame of reference than the
    image series it references (its coordinates would not lie on the images)."""
    drawn, imaged = _mask_frame(mask), str(image.get("FrameOfReferenceUID", ""))
    if drawn and imaged and drawn != imaged:
        raise InvalidInputError(
            f"the {files.role.value} {files.series_uid} is drawn in frame of reference {drawn}, "
            f"not the frame of reference {imaged} of the {series.role.value} series it "
            "references: it does not lie on the images"
        )


def _slice(study: _Study, sequence: str, config: PreprocessConfig, n4: N4Parameters) -> SliceInput:
    role = _ROLE_OF[sequence]
    series, image, datasets = study.image(role)
    carry = [r for r in (SeriesRole.T2W_AX, SeriesRole.DWI) if r is not role]
    mask, source = study.mask_for(role, image, carry)
    with study.clock.stage("inputs"):
        region, region_mask, first = crop_to_voi(image, mask, config.n4_margin_mm)
    if config.n4:
        with study.clock.stage("n4"):
            region = n4_correct(region, region_mask, n4)
    with study.clock.stage("inputs"):
        within = largest_cross_section(region_mask)
        k = first + within
        sop = str(datasets[k].SOPInstanceUID) if len(datasets) > 1 else ""
        array = slice_input(region, region_mask, config.slice_size)
        native = sitk.GetArrayFromImage(region)[within].astype(np.float32)
        native_mask = (sitk.GetArrayFromImage(region_mask)[within] > 0).astype(np.uint8)
        spacing = region.GetSpacing()
    return SliceInput(array, series.series_uid, k, sop, source, native, native_mask,
                      (float(spacing[1]), float(spacing[0])))  # fmt: skip


def _stacks(study: _Study, config: PreprocessConfig) -> dict[str, StackInput]:
    out = {}
    series, t2, _ = study.image(SeriesRole.T2W_AX)
    t2_mask, source = study.mask_for(SeriesRole.T2W_AX, t2, [SeriesRole.DWI])
    with study.clock.stage("inputs"):
        t2_stack = crop_stack(
            t2, t2_mask, config.stack_size, config.stack_depth, config.stack_fov_mm
        )
    out["T2"] = StackInput(t2_stack, series.series_uid, source)
    if study.has(SeriesRole.ADC):
        adc_series, adc, _ = study.image(SeriesRole.ADC)
        adc_mask, source = study.mask_for(SeriesRole.ADC, adc, [SeriesRole.DWI, SeriesRole.T2W_AX])
        uid = adc_series.series_uid
    else:  # science B: ADC from b=0 and b-high, ROI from the DWI
        low, high, b = study.dwi_pair()
        with study.clock.stage("inputs"):
            adc = adc_from_dwi(low, high, b, config.adc_threshold)
        dwi_series, _, _ = study.image(SeriesRole.DWI)
        adc_mask, source = study.mask_for(SeriesRole.DWI, high, [SeriesRole.T2W_AX])
        uid = f"computed from DWI {dwi_series.series_uid}"
    with study.clock.stage("inputs"):
        adc_stack = crop_stack(
            adc, adc_mask, config.stack_size, config.stack_depth, config.stack_fov_mm
        )
    out["ADC"] = StackInput(adc_stack, uid, source)
    return out


def prepare_case(
    studies: Mapping[str, SelectedStudy],
    config: PreprocessConfig | None = None,
    signatures: Sequence[str] = SIGNATURES,
    stacks: bool = True,
) -> CaseInputs:
    """Model inputs from a patient's selected series (:mod:`dicom_io.selection`), keyed
    ``baseline`` / ``restaging``: exactly those series are read, nothing else of the study.

    Builds the slice inputs of ``signatures`` (pre_/post_ T2, DWI, CE) that the studies allow,
    the baseline T2/ADC crop stacks (when ``stacks``) and per-timepoint VOI measurements from
    the T2W mask; whatever cannot be built is listed in ``problems``, an unreadable file of a
    selected series too (naming the file). Selecting from files
    (:func:`dicom_io.selection.select_files`) raises :class:`InvalidInputError` for one.
    """
    unknown = set(signatures) - set(SIGNATURES)
    if unknown:
        raise ValueError(f"unknown signatures {sorted(unknown)}: use {', '.join(SIGNATURES)}")
    config = config or PreprocessConfig()
    n4 = N4Parameters(config.n4_shrink_factor, config.n4_iterations, config.n4_margin_mm)
    out = CaseInputs(config_fingerprint=config.fingerprint)
    clock = Stopwatch()
    for timepoint, selected in studies.items():
        if timepoint not in PREFIX:
            raise ValueError(f"unknown timepoint {timepoint!r}: use baseline or restaging")
        study = _Study(selected, config.roi_pattern, clock)
        for sequence in RESPONSE_SEQUENCES:
            name = f"{PREFIX[timepoint]}_{sequence}"
            if name not in signatures:
                continue
            try:
                out.slices[name] = _slice(study, sequence, config, n4)
            except (PipelineInputError, InvalidInputError) as exc:
                out.problems.append(f"{name}: {exc}")
        try:
            _, t2, _ = study.image(SeriesRole.T2W_AX)
            t2_mask = study.mask_for(SeriesRole.T2W_AX, t2, ())[0]
            with clock.stage("measure"):
                out.features[timepoint] = measure(t2_mask)
        except (PipelineInputError, InvalidInputError) as exc:
            out.problems.append(f"{timepoint} measurements: {exc}")
        if timepoint == BASELINE and stacks:
            try:
                out.stacks.update(_stacks(study, config))
            except (PipelineInputError, InvalidInputError) as exc:
                out.problems.append(f"baseline stacks: {exc}")
        with clock.stage("measure"):
            for role, facts in study.facts().items():
                out.acquisition[f"{timepoint} {SEQUENCE_NAMES[role]}"] = facts
    for problem in out.problems:
        log.info("case preparation: %s", problem)
    out.seconds = {k: round(v, 4) for k, v in clock.seconds.items()}
    return out


def image_and_mask(
    selected: SelectedStudy, role: SeriesRole, roi_pattern: str | None = None
) -> tuple[sitk.Image, sitk.Image | None]:
    """A study's image of ``role`` (the DWI's highest b-value) and the tumour mask drawn on that
    series (``None``: none drawn), read as :func:`prepare_case` reads them."""
    study = _Study(selected, roi_pattern or PreprocessConfig().roi_pattern, Stopwatch())
    series, image, datasets = study.image(role)
    own = study.own_mask(series, datasets)
    return image, own[0] if own is not None else None
