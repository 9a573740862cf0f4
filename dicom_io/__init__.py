"""Reading, writing and sending DICOM; the synthetic rectal-MRI cohort (``dicom_io.synthetic``)."""
