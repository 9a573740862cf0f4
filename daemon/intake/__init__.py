"""Intake: from a received instance to cases. ``ingest`` (check, store durably, index, then
acknowledge), ``assembly`` (study stability, series roles, timepoints, the patient's cases) and
``priors`` (asking the PACS for a patient's earlier studies)."""
