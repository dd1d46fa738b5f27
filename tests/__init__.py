"""The test suite (a package, so that `tests.conftest` is ours and not the `tests` tf2onnx installs)."""
