"""The index: larc's SQLite bookkeeping and the only place (with the web read model) that
speaks SQL. ``schema`` (tables and upgrades), ``rows`` (the frozen rows the readers return),
``database`` (:class:`Index`: named readers and writers)."""

from daemon.index.database import INDEX_FILE, Index, ReadingsSaved
from daemon.index.rows import (
    AutoMaskRow,
    AutoMaskState,
    CaseRow,
    ExportRow,
    ExportState,
    InstanceRecord,
)
from daemon.index.schema import SCHEMA_VERSION

__all__ = [
    "INDEX_FILE",
    "SCHEMA_VERSION",
    "AutoMaskRow",
    "AutoMaskState",
    "CaseRow",
    "ExportRow",
    "ExportState",
    "Index",
    "InstanceRecord",
    "ReadingsSaved",
]
