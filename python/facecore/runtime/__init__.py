"""How the models run: `backend` (the Backend interface, the models' manifest, ONNX Runtime on
CPU) and `batching` (concurrent calls of one model merged into one run). GPU runners plug in here
behind the same interface.
"""
