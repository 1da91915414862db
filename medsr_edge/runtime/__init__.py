"""Edge runtime: image I/O, DICOM, normalisation and inference. numpy + onnxruntime, never torch."""
