"""Edge runtime: image I/O, DICOM, normalisation and inference. numpy + onnxruntime, never torch.

The Python API in four names:

>>> from medsr_edge.runtime import Enhancer, read_image, run_batch, write_derived_dicom
>>> enh = Enhancer("student-x4")                      # shipped model, ONNX Runtime, CPU or GPU
>>> image = read_image("series/IM0001")               # DICOM found by content; HU for CT
>>> frames = enh.iter_enhance_image(image)            # one x4 frame at a time, modality units
>>> write_derived_dicom(Path("out/IM0001.dcm"), image, frames, enh.scale, enh.describe(),
...                     identity=enh.identity, series_label=enh.model_name)
>>> summary = run_batch(enh, ["series/"], output=Path("out"))   # what `medsr-edge enhance` does
"""

from .batch import BatchSummary, run_batch
from .dicom import write_derived_dicom
from .enhancer import Enhancer
from .io import read_image, write_raster

__all__ = ["BatchSummary", "Enhancer", "read_image", "run_batch", "write_derived_dicom", "write_raster"]
