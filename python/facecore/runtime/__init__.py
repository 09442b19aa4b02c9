"""How the models run: `backend` (the Backend interface, the models' manifest, ONNX Runtime on
CPU), `batching` (concurrent calls of one model merged into one run) and `engines` (the engines
built from our ONNX files for GPU runtimes, and their cache). GPU runners plug in here behind the
same interface.
"""
