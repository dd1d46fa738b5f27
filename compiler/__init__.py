"""compiler: YAML recipe -> trained model -> cleaned ONNX -> validated engine, with a report."""

__version__ = "0.1.0"
