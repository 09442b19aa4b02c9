"""How the models run: `backend` (the Backend interface, the models' manifest, ONNX Runtime on
CPU), `batching` (concurrent calls of one model merged into one run), `engines` (the engines built
from our ONNX files for GPU runtimes, and their cache) and `gpu` (the GPU engine,
facecore._trt_engine, behind the same Backend interface; docs/gpu.md).
"""
