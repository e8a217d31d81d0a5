"""Exporters: hwsim Model -> ONNX (QDQ) that ONNX Runtime can run."""
