"""medsr-edge: super-resolution of medical images (MRI, CT, X-ray; DICOM first) for edge devices.

Pipeline, one direction of imports: ``models`` + ``distill`` (torch) -> ``export`` (torch, onnx)
-> ``runtime`` (numpy + onnxruntime only) -> ``cli``.
"""

__version__ = "0.1.0"
