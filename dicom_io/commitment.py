"""Storage Commitment Push Model (PS3.4 J, IHE RAD-10) as SCU: ask a PACS to take
responsibility for instances we sent (N-ACTION), and read its answer (N-EVENT-REPORT).

The PACS answers asynchronously, usually on an association of its own to our listener (Orthanc
always does: it looks our AE title up in its ``DicomModalities``), so the answer reaches
:class:`dicom_io.scp.Listener`, which hands it to the caller as a :class:`CommitmentReport`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE

from dicom_io.scu import PacsUnavailableError

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance
REQUEST_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs of the report

# Failure Reason (0008,1197), PS3.3 C.14.1.1
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}


@dataclass(frozen=True)
class Reference:
    """One instance to be committed."""

    sop_class_uid: str
    sop_instance_uid: str


def references(paths: Sequence[Path]) -> list[Reference]:
    """The SOP class and instance UIDs of DICOM files (headers only)."""
    out = []
    for path in paths:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"]
        )
        out.append(Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return out


def request_commitment(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    transaction_uid: str,
    refs: Sequence[Reference],
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Send the N-ACTION that asks ``called_ae`` to commit ``refs`` under ``transaction_uid``.

    Raises :class:`PacsUnavailableError` when the peer cannot be reached, does not accept the
    Storage Commitment Push Model, or answers with a failure status."""
    request = Dataset()
    request.TransactionUID = transaction_uid
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        items.append(item)
    request.ReferencedSOPSequence = items
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(STORAGE_COMMITMENT)
    where = f"{called_ae} at {host}:{port}"
    try:
        assoc = ae.associate(
            host, port, ae_title=called_ae, tls_args=(tls, host) if tls is not None else None
        )
    except OSError as exc:
        raise PacsUnavailableError(f"cannot reach {where} for storage commitment: {exc}") from exc
    if not assoc.is_established:
        raise PacsUnavailableError(f"{where} refused the storage commitment association")
    try:
        if not any(c.abstract_syntax == STORAGE_COMMITMENT for c in assoc.accepted_contexts):
            raise PacsUnavailableError(f"{where} does not offer storage commitment")
        status, _ = assoc.send_n_action(
            request, REQUEST_COMMITMENT, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    code = int(status.Status) if status is not None and "Status" in status else -1
    if code != 0x0000:
        raise PacsUnavailableError(
            f"{where} refused the storage commitment request (status "
            + (f"0x{code:04X})" if code >= 0 else "none: no answer)")
        )


@dataclass(frozen=True)
class CommitmentReport:
    """A PACS's answer to one commitment request."""

    transaction_uid: str
    reporter_ae: str
    committed: tuple[str, ...] = ()  # SOP instance UIDs
    failed: tuple[tuple[str, int], ...] = field(default=())  # (SOP instance UID, reason code)

    def describe_failures(self, limit: int = 3) -> str:
        """The failures in words, e.g. "2 of 8 objects: ...4471 (no such object instance)"."""
        total = len(self.committed) + len(self.failed)
        shown = ", ".join(
            f"...{uid[-12:]} ({FAILURE_REASONS.get(code, f'reason 0x{code:04X}')})"
            for uid, code in self.failed[:limit]
        )
        more = f" and {len(self.failed) - limit} more" if len(self.failed) > limit else ""
        return f"{len(self.failed)} of {total} objects: {shown}{more}"


def read_report(event_information: Dataset, reporter_ae: str) -> CommitmentReport:
    """The report in an N-EVENT-REPORT's Event Information; ``ValueError`` without a
    Transaction UID."""
    transaction = str(event_information.get("TransactionUID", "") or "")
    if not transaction:
        raise ValueError("the storage commitment report has no Transaction UID")
    committed = tuple(
        str(item.get("ReferencedSOPInstanceUID", ""))
        for item in event_information.get("ReferencedSOPSequence", []) or []
    )
    failed = tuple(
        (str(item.get("ReferencedSOPInstanceUID", "")), int(item.get("FailureReason", 0x0110)))
        for item in event_information.get("FailedSOPSequence", []) or []
    )
    return CommitmentReport(transaction, reporter_ae.strip(), committed, failed)
