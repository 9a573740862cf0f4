"""A bundle's manifest: schema, sha256 of every file, preprocessing. Checked without loading any
network, so that a daemon or a prefork worker parent can check a bundle without importing torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.config import PreprocessConfig

BUNDLE_SCHEMA = 1

__all__ = ["BUNDLE_SCHEMA", "BundleError", "sha256_file", "verify_bundle", "write_manifest"]


class BundleError(ValueError):
    """The bundle cannot be used: missing, damaged, or made for other code or preprocessing."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Add the sha256 of every file under ``folder`` and write ``manifest.json``."""
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = {**manifest, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float) + "\n")


def verify_bundle(
    folder: Path, expected: PreprocessConfig | None = None
) -> tuple[dict[str, Any], PreprocessConfig]:
    """Check a bundle without loading its networks (no torch): manifest, schema, every file's
    sha256, the preprocessing (and that it is ``expected``). Returns the manifest and the
    preprocessing; raises :class:`BundleError` saying what is wrong."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not a larc model bundle (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    schema = manifest.get("schema_version")
    if schema != BUNDLE_SCHEMA:
        raise BundleError(
            f"{folder}: bundle schema {schema}, this larc reads schema {BUNDLE_SCHEMA}: "
            "retrain the bundle with this version, or install the larc it was made with"
        )
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{folder}: {name} was changed after the bundle was written")
    try:
        preprocess = PreprocessConfig.model_validate(manifest["preprocess"])
    except (KeyError, ValueError) as exc:
        raise BundleError(
            f"{folder}: the preprocessing configuration is unreadable: {exc}"
        ) from exc
    if preprocess.fingerprint != manifest.get("preprocess_fingerprint"):
        raise BundleError(f"{folder}: preprocessing fingerprint does not match its configuration")
    if expected is not None and expected.fingerprint != preprocess.fingerprint:
        mine, theirs = expected.model_dump(), preprocess.model_dump()
        differ = ", ".join(
            f"{k} {theirs[k]!r} != {mine[k]!r}" for k in mine if mine[k] != theirs[k]
        )
        raise BundleError(
            f"{folder} was trained with other preprocessing ({differ}): scores would not "
            "mean what the model card says; use the bundle's preprocessing or retrain"
        )
    return manifest, preprocess
