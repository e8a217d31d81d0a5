"""The shared ONNX front end (frontend.py), one handler per ONNX op (ops/), and the float reader built on them."""
