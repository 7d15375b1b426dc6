"""ONNX export of kit networks with parity checks against onnxruntime (DESIGN section 7)."""

__all__: list[str] = []
