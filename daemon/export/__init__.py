"""Export: result objects to their destinations, with retries and parking.

``destinations`` (one class per kind of destination: the outbox folder, a C-STORE peer, a
STOW-RS server) and
``exporter`` (the loop over due exports and the case states that follow from them).
"""

from daemon.export.destinations import (
    CStoreDestination,
    DestinationUnavailableError,
    ExportDestination,
    OutboxDestination,
    StowRsDestination,
    client_tls,
    configured_destinations,
    destination_name,
)
from daemon.export.exporter import Exporter, ExportOutcome

__all__ = [
    "CStoreDestination",
    "DestinationUnavailableError",
    "ExportDestination",
    "ExportOutcome",
    "Exporter",
    "OutboxDestination",
    "StowRsDestination",
    "client_tls",
    "configured_destinations",
    "destination_name",
]
