"""Series selection: which series of a study a case uses, decided once.

The daemon's case builder (from the index), training (from a folder of files) and
``prepare_case`` (which reads what was selected) all go through :func:`select_series`, so what
a case records as its inputs is exactly what is scored. Rules:

- an image role (T2W_AX, DWI, ADC, CE_T1): the series of that role with the most instances
  (ties: the higher SeriesInstanceUID);
- the tumour mask of an image series: a drawn mask before an automatic one (larc's own
  segmenter), an RTSTRUCT before a SEG, then the lower SeriesInstanceUID, among the masks that
  reference that series.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from dicom_io.files import read_dicom
from dicom_io.roles import DEFAULT_RULES, RoleRule, SeriesRole, classify_series

IMAGE_ROLES = (SeriesRole.T2W_AX, SeriesRole.DWI, SeriesRole.ADC, SeriesRole.CE_T1)
MASK_ROLES = (SeriesRole.RTSTRUCT, SeriesRole.SEG)


@dataclass(frozen=True)
class SeriesCandidate:
    """What selection needs to know of one series."""

    series_uid: str
    role: SeriesRole
    instances: int
    referenced_series_uid: str | None = None  # masks: the series they were drawn on
    automatic: bool = False  # masks: made by a program (larc's segmenter), not drawn by a person


def pick_series(candidates: Iterable[SeriesCandidate], role: SeriesRole) -> SeriesCandidate | None:
    """The series of ``role`` a case uses: the most instances, ties by the higher UID."""
    found = [c for c in candidates if c.role == role]
    return max(found, key=lambda c: (c.instances, c.series_uid)) if found else None


def mask_preference(mask: SeriesCandidate | SeriesFiles) -> tuple[bool, bool, str]:
    """Sort key of the masks of one series, best first: drawn before automatic, an RTSTRUCT
    before a SEG, then by UID."""
    return (mask.automatic, mask.role != SeriesRole.RTSTRUCT, mask.series_uid)


def masks_on(candidates: Iterable[SeriesCandidate], series_uid: str) -> list[SeriesCandidate]:
    """The masks drawn on ``series_uid``, best first (:func:`mask_preference`)."""
    found = [
        c for c in candidates if c.role in MASK_ROLES and c.referenced_series_uid == series_uid
    ]
    return sorted(found, key=mask_preference)


@dataclass(frozen=True)
class StudySelection:
    """The series chosen in one study: one per image role present, and each one's mask."""

    images: Mapping[SeriesRole, SeriesCandidate]
    masks: Mapping[str, SeriesCandidate]  # image series UID -> its chosen mask
    all_masks: tuple[SeriesCandidate, ...]  # every mask of the study

    def mask_of(self, role: SeriesRole) -> SeriesCandidate | None:
        """The mask chosen for the series of ``role``, or ``None``."""
        image = self.images.get(role)
        return self.masks.get(image.series_uid) if image is not None else None


def select_series(candidates: Sequence[SeriesCandidate]) -> StudySelection:
    """The selection of one study's series (see the module doc for the rules)."""
    images = {role: chosen for role in IMAGE_ROLES if (chosen := pick_series(candidates, role))}
    masks = {
        image.series_uid: found[0]
        for image in images.values()
        if (found := masks_on(candidates, image.series_uid))
    }
    every_mask = tuple(c for c in candidates if c.role in MASK_ROLES)
    return StudySelection(images, masks, every_mask)


@dataclass(frozen=True)
class SeriesFiles:
    """The files of one selected series."""

    series_uid: str
    role: SeriesRole
    paths: tuple[Path, ...]
    referenced_series_uid: str | None = None
    automatic: bool = False  # masks: made by larc's segmenter


@dataclass(frozen=True)
class SelectedStudy:
    """What ``prepare_case`` reads of one study: the selected image series and the masks."""

    images: Mapping[SeriesRole, SeriesFiles] = field(default_factory=dict)
    masks: tuple[SeriesFiles, ...] = ()

    def masks_on(self, series_uid: str) -> list[SeriesFiles]:
        """Masks drawn on ``series_uid``, best first (:func:`mask_preference`)."""
        found = [m for m in self.masks if m.referenced_series_uid == series_uid]
        return sorted(found, key=mask_preference)


def classify_files(
    paths: Sequence[Path], rules: Sequence[RoleRule] = DEFAULT_RULES
) -> dict[str, tuple[SeriesCandidate, tuple[Path, ...]]]:
    """Every series of a folder's study by UID: its role by ``rules`` and its files.

    Reads each header once (no pixel data); unreadable files raise
    :class:`InvalidInputError`."""
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in paths:
        ds = read_dicom(path, headers_only=True)
        groups[str(ds.get("SeriesInstanceUID", ""))].append((path, ds))
    out = {}
    for uid, members in groups.items():
        found = classify_series([ds for _, ds in members], rules)
        out[uid] = (
            SeriesCandidate(
                uid,
                found.role,
                len(members),
                found.referenced_series_uid,
                automatic=found.machine_made_by is not None,
            ),
            tuple(p for p, _ in members),
        )
    return out


def select_files(paths: Sequence[Path], rules: Sequence[RoleRule] = DEFAULT_RULES) -> SelectedStudy:
    """A study given as files (training, benchmarks): classified and selected like the
    daemon does, every image role present and every drawn mask kept (a mask a program made on
    its own is left out, as the daemon leaves it out: models learn from drawn outlines)."""
    series = classify_files(paths, rules)
    selection = select_series([candidate for candidate, _ in series.values()])
    return SelectedStudy(
        images={
            role: SeriesFiles(c.series_uid, role, series[c.series_uid][1])
            for role, c in selection.images.items()
        },
        masks=tuple(
            SeriesFiles(m.series_uid, m.role, series[m.series_uid][1], m.referenced_series_uid)
            for m in selection.all_masks
            if not m.automatic
        ),
    )
