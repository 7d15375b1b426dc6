"""ONNX export of kit networks with parity checks against onnxruntime (docs/onnx.md)."""

__all__: list[str] = []
