"""DICOM in and out: the listener and client (``scp``, ``scu``), durable storage, series roles
and selection, pairing of timepoints, series and masks to voxels, the SR / Secondary Capture /
SEG writers, and the synthetic rectal-MRI cohort (``dicom_io.synthetic``)."""
