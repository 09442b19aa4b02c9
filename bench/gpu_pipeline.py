"""Speed and parity of the GPU engine beside the ONNX Runtime CPU path, in one run (tools/gpu_check.sh).

For a 640x480 one-face photo (an LFW image on a grey canvas) it measures, on each backend:
  - models: recogniser chips/s at batch 1, 8, 32, 128 (one Backend.run of that many chips), and the
    embeddings against ONNX Runtime's (cosine);
  - pipeline: detect+align+embed images/s with 1, 8, 32, 128 callers at once (the engine's batcher
    merges their model calls), from decoded images and with JPEG decoding included, the batch-1
    latency, and where one image's time goes (P-Net, R-Net, O-Net, the rest of detection, alignment
    and embedding), so a missed goal names its stage.
Writes one JSON object (--out) and prints a summary. Runs on the CPU too (--backend torch) to check
the script itself; the numbers that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import facecore
import numpy as np
from facecore.pipeline.engine import Engine
from facecore.runtime.gpu import available, describe, open_backend

BATCHES = (1, 8, 32, 128)


def photo(lfw_jpg: Path) -> np.ndarray:
    """A 640x480 BGR photo with one face: the LFW image scaled to 400x400 on a grey canvas."""
    source = cv2.imread(str(lfw_jpg))
    if source is None:
        raise SystemExit(f"cannot read {lfw_jpg}")
    face = cv2.resize(source, (400, 400), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[40:440, 120:520] = face
    return canvas


def throughput(work: Callable[[], int], callers: int, seconds: float) -> float:
    """Items per second done by `callers` threads each calling work() until `seconds` pass."""
    done = [0] * callers
    stop = time.perf_counter() + seconds
    start_gate = threading.Barrier(callers + 1)

    def loop(i: int) -> None:
        start_gate.wait()
        while time.perf_counter() < stop:
            done[i] += work()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=-1)))


def models_bench(engines: dict[str, Engine], seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for b in BATCHES:
        chips = rng.uniform(0, 255, (b, 3, 150, 150)).astype(np.float32)
        row: dict[str, Any] = {}
        ref = engines["onnxruntime"].backend.run("recognizer", {"image": chips})[0]
        for name, engine in engines.items():
            got = engine.backend.run("recognizer", {"image": chips})[0]

            def embed(engine: Engine = engine, chips: np.ndarray = chips) -> int:
                return len(engine.backend.run("recognizer", {"image": chips})[0])

            rate = throughput(embed, 1, seconds)
            row[name] = {
                "chips_per_s": round(rate, 1),
                "min_cosine_vs_onnxruntime": cosine(got, ref),
            }
        out[f"batch_{b}"] = row
    return out


def stage_times(engine: Engine, image: np.ndarray, rounds: int) -> dict[str, float]:
    """Median milliseconds per stage of one image, run alone."""
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        det = engine.detector.detect(image, timings=t)
        t1 = time.perf_counter()
        engine.detect(image, 1, ("embedding",))
        t2 = time.perf_counter()
        t["detect_total"] = t1 - t0
        t["pipeline_total"] = t2 - t1
        t["align_embed"] = max(0.0, (t2 - t1) - (t1 - t0))  # the same detection runs again inside
        rows.append(t)
        assert len(det) >= 1
    return {k: round(1000 * statistics.median(r[k] for r in rows), 3) for k in rows[0]}


def pipeline_bench(
    engines: dict[str, Engine], image: np.ndarray, jpeg: bytes, seconds: float, cpu_callers: int
) -> dict[str, Any]:
    ref = engines["onnxruntime"].detect(image, 1, ("embedding",))
    out: dict[str, Any] = {}
    for name, engine in engines.items():
        faces = engine.detect(image, 1, ("embedding",))
        res: dict[str, Any] = {
            "faces": len(faces),
            "cosine_vs_onnxruntime": (
                cosine(faces[0].embedding, ref[0].embedding)
                if faces and ref and faces[0].embedding is not None and ref[0].embedding is not None
                else None
            ),
            "stages_ms": stage_times(engine, image, 15),
        }
        lat = []
        for _ in range(20):
            t0 = time.perf_counter()
            engine.detect(image, 1, ("embedding",))
            lat.append(time.perf_counter() - t0)
        res["batch1_latency_ms"] = round(1000 * statistics.median(lat), 3)
        for b in BATCHES:
            callers = min(b, cpu_callers) if name == "onnxruntime" else b

            def decoded(engine: Engine = engine) -> int:
                return len(engine.detect(image, 1, ("embedding",)))

            def with_jpeg(engine: Engine = engine) -> int:
                return len(engine.detect(facecore.decode_image(jpeg), 1, ("embedding",)))

            res[f"batch_{b}"] = {
                "callers": callers,
                "images_per_s": round(throughput(decoded, callers, seconds), 1),
                "images_per_s_with_jpeg": round(throughput(with_jpeg, callers, seconds), 1),
            }
        out[name] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="cuda", help="cuda, tensorrt or torch (the cpu)")
    p.add_argument("--lfw-image", type=Path, required=True)
    p.add_argument("--engines", type=Path, default=None, help="engines directory")
    p.add_argument("--precision", default="auto")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    p.add_argument("--cpu-callers", type=int, default=16, help="threads for the CPU path at most")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    image = photo(a.lfw_image)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    t0 = time.perf_counter()
    gpu_backend = open_backend(
        a.backend, engines_dir=a.engines, precision=a.precision, max_batch=128, contexts=2
    )
    start_s = time.perf_counter() - t0
    engines = {
        "onnxruntime": Engine(backend="onnxruntime"),
        a.backend: Engine(backend=gpu_backend),
    }
    report: dict[str, Any] = {
        "available": available(),
        "backend": describe(gpu_backend),
        "start_s_incl_warm": round(start_s, 2),
        "image": {"source": a.lfw_image.name, "shape": list(image.shape), "jpeg_bytes": len(jpeg)},
        "models_recognizer": models_bench(engines, a.seconds),
        "pipeline_detect_align_embed": pipeline_bench(
            engines, image, jpeg, a.seconds, a.cpu_callers
        ),
        "engine_stats": getattr(gpu_backend, "stats", dict)(),
    }
    a.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("backend", "start_s_incl_warm")}))
    for name, res in report["pipeline_detect_align_embed"].items():
        rates = {b: res[f"batch_{b}"]["images_per_s"] for b in BATCHES}
        print(f"{name}: images/s by callers {rates}, batch-1 {res['batch1_latency_ms']} ms")


if __name__ == "__main__":
    main()
