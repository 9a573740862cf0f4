"""Writes one synthetic MRI study (every series, RTSTRUCT, optional SEG) as DICOM files."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_io.geometry import SliceStack
from dicom_io.seg import binary_segmentation
from dicom_io.synthetic.anatomy import Tissue, tumour_implicit
from dicom_io.synthetic.appearance import (
    MAX_PIXEL,
    Contrast,
    StudyScene,
    render,
    render_dwi,
    scanner_adc,
)
from dicom_io.synthetic.rtstruct import Contour, build_rtstruct, slice_contours
from dicom_io.synthetic.vendors import Role, VendorProfile, image_type

UID_ROOT = (
    "1.2.826.0.1.3680043.8.498."  # pydicom's root; UIDs are derived from (seed, patient, ...)
)
IMPLEMENTATION_VERSION = "LARC_SYNTH_1"


@dataclass(frozen=True)
class Identity:
    """Who the patient is (synthetic) and the cohort seed that makes every UID reproducible."""

    patient_id: str
    patient_name: str
    birth_date: datetime.date
    sex: str
    seed: int

    def uid(self, *parts: object) -> str:
        """A UID fixed by the seed, the patient and ``parts``."""
        return str(generate_uid(UID_ROOT, [str(self.seed), self.patient_id, *map(str, parts)]))


@dataclass
class SeriesRecord:
    """One written series."""

    role: Role
    series_instance_uid: str
    series_number: int
    description: str
    files: list[Path] = field(default_factory=list)


@dataclass
class StudyRecord:
    """One written study."""

    timepoint: str
    study_instance_uid: str
    study_date: datetime.date
    vendor: str
    directory: Path
    series: dict[Role, SeriesRecord] = field(default_factory=dict)

    @property
    def instance_count(self) -> int:
        """Number of files written for the study."""
        return sum(len(s.files) for s in self.series.values())


@dataclass(frozen=True)
class StudyOptions:
    """Size of the images and which optional pieces the study has."""

    matrix: int = 64
    slices: int = 24
    with_adc: bool = True
    with_seg: bool = False
    series: frozenset[Role] = frozenset(Role)  # which series to write (with_adc/seg still apply)


@dataclass(frozen=True)
class DwiImages:
    """What the DWI series holds, for the ADC map and the SEG derived from it."""

    stack: SliceStack
    b0: NDArray[np.float64]
    high: NDArray[np.float64]
    b_value: float
    high_datasets: list[Dataset]


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _age(birth: datetime.date, on: datetime.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


class StudyWriter:
    """Writes the series of one study; headers shared by all its objects are built once."""

    def __init__(
        self,
        out_dir: Path,
        identity: Identity,
        scene: StudyScene,
        vendor: VendorProfile,
        timepoint: str,
        study_datetime: datetime.datetime,
        rng: np.random.Generator,
        options: StudyOptions,
        study_description: str,
    ) -> None:
        self.identity = identity
        self.scene = scene
        self.vendor = vendor
        self.rng = rng
        self.options = options
        self.start = study_datetime
        self.record = StudyRecord(
            timepoint=timepoint,
            study_instance_uid=identity.uid("study", timepoint),
            study_date=study_datetime.date(),
            vendor=vendor.key,
            directory=out_dir / f"{study_datetime:%Y%m%d}_{timepoint}",
        )
        self.frame_of_reference_uid = identity.uid("for", timepoint)
        self.study_description = study_description
        self._series_count = 0
        self._minutes = 0

    # -- headers -------------------------------------------------------------------------------

    def _common(self, ds: Dataset) -> None:
        ident = self.identity
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = ident.patient_name
        ds.PatientID = ident.patient_id
        ds.PatientBirthDate = f"{ident.birth_date:%Y%m%d}"
        ds.PatientSex = ident.sex
        ds.PatientAge = _age(ident.birth_date, self.record.study_date)
        ds.StudyInstanceUID = self.record.study_instance_uid
        ds.StudyDate = f"{self.start:%Y%m%d}"
        ds.StudyTime = f"{self.start:%H%M%S}"
        ds.ReferringPhysicianName = ""
        ds.StudyID = f"{self.start:%y%m%d}{self.identity.patient_id[-3:]}"
        ds.AccessionNumber = f"ACC{self.identity.uid('acc', self.record.timepoint)[-10:]}"
        ds.StudyDescription = self.study_description
        ds.Manufacturer = self.vendor.manufacturer
        ds.ManufacturerModelName = self.vendor.model
        ds.SoftwareVersions = self.vendor.software
        ds.InstitutionName = "LARC Synthetic Hospital"
        ds.StationName = f"MR{self.vendor.key.upper()[:6]}"
        ds.DeviceSerialNumber = str(10000 + int(self.identity.uid("sn")[-4:]))

    def _new_series(self, role: Role, modality_suffix: str = "") -> SeriesRecord:
        self._series_count += 1
        step = self.vendor.series_step
        number = self._series_count * step + (1 if step > 1 else 0)
        description = self.vendor.descriptions.get(role, role.value) + modality_suffix
        record = SeriesRecord(
            role=role,
            series_instance_uid=self.identity.uid("series", self.record.timepoint, role.value),
            series_number=number,
            description=description,
        )
        self.record.series[role] = record
        self._minutes += 3
        return record

    def _series_time(self) -> datetime.datetime:
        return self.start + datetime.timedelta(minutes=self._minutes)

    def _mr_series_base(self, series: SeriesRecord, role: Role) -> Dataset:
        ds = Dataset()
        self._common(ds)
        when = self._series_time()
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series.series_instance_uid
        ds.SeriesNumber = series.series_number
        ds.SeriesDescription = series.description
        ds.ProtocolName = series.description
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = f"{when:%Y%m%d}"
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{when:%H%M%S}"
        ds.BodyPartExamined = "PELVIS"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = self.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = image_type(self.vendor, role)
        ds.AcquisitionNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = self.vendor.field_strength_t
        ds.ImagingFrequency = round(42.577 * self.vendor.field_strength_t, 4)
        ds.NumberOfAverages = 2
        ds.EchoNumbers = 1
        ds.ReceiveCoilName = "Body"
        ds.TransmitCoilName = "Body"
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.PatientOrientation = ""
        sequence = {
            Role.T2W: ("SE", "SK\\SP", "SAT1", "2D", 4200.0, 95.0, 18, 150.0),
            Role.T2W_SAG: ("SE", "SK\\SP", "", "2D", 3800.0, 100.0, 16, 150.0),
            Role.T2W_COR: ("SE", "SK\\SP", "", "2D", 3800.0, 100.0, 16, 150.0),
            Role.LOCALIZER: ("GR", "SP", "", "2D", 8.6, 4.0, 1, 20.0),
            Role.DWI: ("EP", "SK\\SP", "FS", "2D", 5200.0, 65.0, 1, 90.0),
            Role.ADC: ("EP", "SK\\SP", "FS", "2D", 5200.0, 65.0, 1, 90.0),
            Role.CE_T1: ("GR", "SP\\SK", "FS", "3D", 4.2, 1.9, 1, 12.0),
        }[role]
        (
            ds.ScanningSequence,
            ds.SequenceVariant,
            ds.ScanOptions,
            ds.MRAcquisitionType,
            ds.RepetitionTime,
            ds.EchoTime,
            ds.EchoTrainLength,
            ds.FlipAngle,
        ) = sequence
        if role is Role.CE_T1:
            ds.ContrastBolusAgent = "Gadoterate meglumine (Dotarem)"
            ds.ContrastBolusRoute = "IV"
            ds.ContrastBolusVolume = 15.0
            ds.ContrastBolusStartTime = f"{when - datetime.timedelta(minutes=1):%H%M%S}"
        if self.vendor.rescale_slope != 1.0:
            ds.RescaleIntercept = 0
            ds.RescaleSlope = self.vendor.rescale_slope
            ds.RescaleType = "US"
        return ds

    def _slice_dataset(
        self,
        base: Dataset,
        stack: SliceStack,
        index: int,
        pixels: NDArray[np.float64],
        instance_number: int,
        uid_parts: tuple[object, ...],
    ) -> Dataset:
        ds = Dataset()
        ds.update(base)
        sop_uid = self.identity.uid("sop", self.record.timepoint, *uid_parts)
        ds.file_meta = _file_meta(MRImageStorage, sop_uid)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = base.ContentDate
        ds.InstanceCreationTime = base.ContentTime
        ds.InstanceNumber = instance_number
        position = stack.slice_position(index)
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = [round(v, 6) for v in stack.image_orientation()]
        ds.PixelSpacing = [round(v, 6) for v in stack.pixel_spacing_mm]
        ds.SliceThickness = round(stack.slice_thickness_mm, 4)
        ds.SpacingBetweenSlices = round(stack.slice_spacing_mm, 4)
        ds.SliceLocation = round(float(position @ stack.normal), 4)
        ds.Rows = stack.rows
        ds.Columns = stack.columns
        ds.AcquisitionMatrix = [0, stack.columns, stack.rows, 0]
        ds.PercentPhaseFieldOfView = 100.0
        ds.PixelBandwidth = 200.0
        slope = float(base.get("RescaleSlope", 1.0))
        stored = np.clip(np.rint(pixels / slope), 0, MAX_PIXEL).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.SmallestImagePixelValue = int(stored.min())
        ds.LargestImagePixelValue = int(stored.max())
        window = float(np.percentile(stored, 99.5)) * slope
        ds.WindowCenter = round(window / 2, 1)
        ds.WindowWidth = round(max(window, 1.0), 1)
        return ds

    def _save(self, series: SeriesRecord, ds: Dataset) -> Dataset:
        folder = self.record.directory / f"{series.series_number:04d}_{series.role.value}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        series.files.append(path)
        return ds

    def _instance_numbers(self, count: int) -> list[int]:
        numbers = list(range(1, count + 1))
        return numbers[::-1] if self.vendor.slices_descending else numbers

    # -- series --------------------------------------------------------------------------------

    def write_stack(self, role: Role, stack: SliceStack, contrast: Contrast) -> list[Dataset]:
        """Render and write an ordinary single-contrast series."""
        series = self._new_series(role)
        base = self._mr_series_base(series, role)
        volume = render(self.scene, stack, contrast, self.rng)
        numbers = self._instance_numbers(stack.slices)
        return [
            self._save(
                series, self._slice_dataset(base, stack, k, volume[k], numbers[k], (role, k))
            )
            for k in range(stack.slices)
        ]

    def write_localizer(self, stacks: list[SliceStack]) -> None:
        """Three single-slice scouts in three orientations, one series."""
        series = self._new_series(Role.LOCALIZER)
        base = self._mr_series_base(series, Role.LOCALIZER)
        for n, stack in enumerate(stacks, start=1):
            image = render(self.scene, stack, Contrast.T2W, self.rng)[0] * 0.6
            self._save(series, self._slice_dataset(base, stack, 0, image, n, ("loc", n)))

    def write_dwi(self, stack: SliceStack) -> DwiImages:
        """DWI b=0 and high b in one series."""
        b_high = self.vendor.high_b
        series = self._new_series(Role.DWI)
        base = self._mr_series_base(series, Role.DWI)
        images = render_dwi(self.scene, stack, (0.0, float(b_high)), self.rng)
        numbers = self._instance_numbers(stack.slices)
        high: list[Dataset] = []
        for k in range(stack.slices):
            for j, b in enumerate((0, b_high)):
                if self.vendor.dwi_interleaved:
                    number = 2 * (numbers[k] - 1) + j + 1
                else:
                    number = j * stack.slices + numbers[k]
                ds = self._slice_dataset(base, stack, k, images[float(b)][k], number, ("dwi", b, k))
                self.vendor.write_b_value(ds, b)
                self._save(series, ds)
                if b == b_high:
                    high.append(ds)
        return DwiImages(stack, images[0.0], images[float(b_high)], float(b_high), high)

    def write_adc(self, dwi: DwiImages) -> None:
        """The scanner's ADC map (10^-6 mm^2/s) computed from the DWI images."""
        stack = dwi.stack
        series = self._new_series(Role.ADC)
        base = self._mr_series_base(series, Role.ADC)
        adc = scanner_adc(dwi.b0, dwi.high, dwi.b_value) * 1000.0
        numbers = self._instance_numbers(stack.slices)
        for k in range(stack.slices):
            ds = self._slice_dataset(base, stack, k, adc[k], numbers[k], ("adc", k))
            self._save(series, ds)

    def write_rtstruct(self, t2w: list[Dataset], stack: SliceStack, roi_name: str) -> None:
        """RTSTRUCT with the tumour's closed planar contours on the T2W slices."""
        timepoint = self.scene.timepoint
        offset = np.asarray(self.scene.offset_mm)

        def implicit(points: NDArray[np.float64]) -> NDArray[np.float64]:
            return tumour_implicit(timepoint.anatomy, timepoint.shape, points - offset)

        contours: list[Contour] = []
        for k, ds in enumerate(t2w):
            for points in slice_contours(implicit, stack, k):
                contours.append(Contour(ds.SOPClassUID, ds.SOPInstanceUID, points))
        series = self._new_series(Role.RTSTRUCT)
        when = self._series_time()
        ds = build_rtstruct(
            referenced=t2w,
            contours=contours,
            roi_name=roi_name,
            series_instance_uid=series.series_instance_uid,
            series_number=series.series_number,
            sop_instance_uid=self.identity.uid("rtstruct", self.record.timepoint),
            when=when,
            series_description="RT Structure Set",
        )
        self._common(ds)
        ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
        series.description = ds.SeriesDescription
        self._save(series, ds)

    def write_seg(self, dwi: DwiImages) -> None:
        """DICOM SEG of the tumour on the DWI high-b images: voxels at least half tumour."""
        stack, s = dwi.stack, 4
        fraction = np.stack(
            [
                (self.scene.labels(stack.slice_points(k, supersample=s)) == Tissue.TUMOUR)
                .reshape(stack.rows, s, stack.columns, s)
                .mean(axis=(1, 3))
                for k in range(stack.slices)
            ]
        )
        mask = fraction >= 0.5
        if not mask.any():  # a small residual tumour on a coarse grid: keep every touched voxel
            mask = fraction > 0
        series = self._new_series(Role.SEG)
        seg = binary_segmentation(
            dwi.high_datasets,
            mask,
            series_instance_uid=series.series_instance_uid,
            series_number=series.series_number,
            sop_instance_uid=self.identity.uid("seg", self.record.timepoint),
            manufacturer="LARC Synthetic",
            model="larc synth",
            software_version=IMPLEMENTATION_VERSION,
            series_description="Tumour SEG on DWI",
            content_datetime=self._series_time(),
        )
        self._pin_generated_values(
            seg, self._series_time(), self.identity.uid("dimorg", series.series_instance_uid)
        )
        series.description = seg.SeriesDescription
        self._save(series, seg)

    @staticmethod
    def _pin_generated_values(ds: Dataset, when: datetime.datetime, dimension_uid: str) -> None:
        """Replace what highdicom takes from the clock or a random UID, so a seed fixes the file."""
        ds.InstanceCreationDate = f"{when:%Y%m%d}"
        ds.InstanceCreationTime = f"{when:%H%M%S}"
        for item in ds.get("ContributingEquipmentSequence", []):
            item.ContributionDateTime = f"{when:%Y%m%d%H%M%S}"
        for name in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
            for item in ds.get(name, []):
                item.DimensionOrganizationUID = dimension_uid

    # -- the study -----------------------------------------------------------------------------

    def write(self, roi_name: str) -> StudyRecord:
        """Write every series of the study and return what was written."""
        opts = self.options
        tp = self.scene.timepoint
        anatomy = tp.anatomy
        centre = np.asarray(anatomy.tumour_centre) + np.asarray(self.scene.offset_mm)
        centre = centre + self.rng.normal(0, 2.0, 3)  # where the radiographer put the stack
        axis, e1, _ = anatomy.axis_frame()
        column = np.cross(axis, e1)
        span = 2 * tp.shape.half_length_mm + 20.0
        n = opts.matrix
        t2_spacing = float(np.clip(span / opts.slices, 2.5, 4.0))
        t2 = SliceStack.centred(
            centre, e1, column, (n, n), (200.0, 200.0), opts.slices, t2_spacing, t2_spacing * 0.9
        )
        dwi_slices = max(8, math.ceil(opts.slices * t2_spacing / 4.0))
        dwi = SliceStack.centred(
            centre, e1, column, (max(48, n // 2),) * 2, (240.0, 240.0), dwi_slices, 4.0, 4.0
        )
        axial_row, axial_col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        ce_slices = int(np.clip(round(span / 2.5), 12, 48))
        ce = SliceStack.centred(
            centre, axial_row, axial_col, (n, n), (240.0, 240.0), ce_slices, 2.5, 2.5
        )
        sag_row, sag_col = np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
        cor_row, cor_col = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
        side = max(6, opts.slices // 2)
        sag = SliceStack.centred(centre, sag_row, sag_col, (n, n), (240.0, 240.0), side, 4.0, 4.0)
        cor = SliceStack.centred(centre, cor_row, cor_col, (n, n), (300.0, 300.0), side, 4.0, 4.0)
        scouts = [
            SliceStack.centred(centre, r, c, (n, n), (400.0, 400.0), 1, 8.0, 8.0)
            for r, c in ((axial_row, axial_col), (sag_row, sag_col), (cor_row, cor_col))
        ]

        wanted = opts.series
        if Role.LOCALIZER in wanted:
            self.write_localizer(scouts)
        if Role.T2W_SAG in wanted:
            self.write_stack(Role.T2W_SAG, sag, Contrast.T2W)
        t2w = self.write_stack(Role.T2W, t2, Contrast.T2W)  # always: the RTSTRUCT is drawn on it
        if Role.T2W_COR in wanted:
            self.write_stack(Role.T2W_COR, cor, Contrast.T2W)
        if Role.DWI in wanted:
            dwi_images = self.write_dwi(dwi)
            if opts.with_adc and Role.ADC in wanted:
                self.write_adc(dwi_images)
            if opts.with_seg and Role.SEG in wanted:
                self.write_seg(dwi_images)
        if Role.CE_T1 in wanted:
            self.write_stack(Role.CE_T1, ce, Contrast.CE_T1)
        self.write_rtstruct(t2w, t2, roi_name)
        return self.record
