"""INT8 quantization of BaryNet."""
