"""PyTorch checkpoint -> ONNX (FP32, FP16, INT8 QDQ) -> TensorRT engines. Needs the ``export`` extra."""
