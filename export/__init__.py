"""PyTorch → ONNX export with parity reports, fp16/int8 variants, and the BentoML model store."""
