"""ONNX, TensorRT, CoreML and OpenVINO export of BaryNet."""
