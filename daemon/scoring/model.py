"""What the daemon reads of the model bundle: name, version, preprocessing, the features its
CR model takes from readings. Read from the manifest without loading a network (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import PreprocessConfig
from pipeline.envelope import Envelope
from pipeline.manifest import verify_bundle


@dataclass(frozen=True)
class ModelInfo:
    """What the daemon needs of the model bundle (read from its manifest)."""

    folder: Path
    name: str
    version: str
    preprocess: PreprocessConfig
    cr_features: tuple[str, ...] = ()  # the radiologist-read features of the CR/CRD models
    envelope: Envelope | None = None  # what the training patients' series were (None: unknown)
    segmenter: bool = False  # the bundle carries an automatic tumour segmenter

    @property
    def label(self) -> str:
        """``name version`` as :class:`pipeline.bundle.Bundle` calls it."""
        return f"{self.name} {self.version}"

    @classmethod
    def read(cls, folder: Path) -> ModelInfo:
        """From ``folder`` (checked: files, hashes, preprocessing); :class:`BundleError`
        (a ``ValueError``) naming what is wrong."""
        manifest, preprocess = verify_bundle(folder)
        cr = tuple(str(f) for f in (manifest.get("response") or {}).get("cr_features") or ())
        envelope = Envelope.from_json(manifest["envelope"]) if manifest.get("envelope") else None
        return cls(
            folder, str(manifest["name"]), str(manifest["version"]), preprocess, cr, envelope,
            segmenter=bool(manifest.get("segmentation")),
        )  # fmt: skip
