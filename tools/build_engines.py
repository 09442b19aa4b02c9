"""Build the engines of models/onnx into models/engines/: a thin CLI over facecore.runtime.engines.

    python tools/build_engines.py [--models models/onnx] [--out models/engines]
                                  [--device cpu|cuda|cuda:N] [--precision fp32|fp16]
                                  [--batch MIN,OPT,MAX] [--runtime torchscript|tensorrt|all]
                                  [--only NAME ...] [--force]

For every ONNX model of the manifest: the engine cached under this machine's key (model sha256,
device name and compute capability, runtime version, precision, batch profile), or a new build; a
stale or foreign engine is never loaded (docs/gpu.md, "Engines and their cache"). --runtime all
(the default) is TorchScript, plus TensorRT where `tensorrt` imports (never run here: no machine of
this project has TensorRT). --precision defaults to fp16 on GPUs of compute capability 7.0 and newer,
fp32 otherwise. --force rebuilds engines that are up to date. Needs torch and onnx2torch
(pip install 'facecore[engines]').
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from facecore.errors import EngineError
from facecore.runtime import engines

REPO = Path(__file__).resolve().parents[1]


def _batch(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--batch wants MIN,OPT,MAX, got {text!r}")
    return parts[0], parts[1], parts[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=Path, default=REPO / "models" / "onnx")
    ap.add_argument("--out", type=Path, default=None, help="default: engines/ beside --models")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=engines.PRECISIONS, default=None)
    ap.add_argument("--batch", type=_batch, default=engines.DEFAULT_BATCH, metavar="MIN,OPT,MAX")
    ap.add_argument("--runtime", choices=[*engines.RUNTIMES, "all"], default="all")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)

    out: Path = args.out or engines.default_engines_dir(args.models)
    runtimes = [args.runtime] if args.runtime != "all" else ["torchscript"]
    if args.runtime == "all" and importlib.util.find_spec("tensorrt") is not None:
        runtimes.append("tensorrt")
    try:
        for runtime in runtimes:
            keys = engines.manifest_keys(
                args.models, args.device, args.precision, args.batch, runtime
            )
            unknown = set(args.only or ()) - set(keys)
            if unknown:
                raise EngineError(f"no ONNX model named {sorted(unknown)} in {args.models}")
            for role, (key, onnx_path) in keys.items():
                if args.only and role not in args.only:
                    continue
                if args.force:
                    engines.cache_path(key, out).unlink(missing_ok=True)
                elif engines.lookup(key, out) is not None:
                    print(f"{role} ({runtime}): up to date")
                    continue
                t0 = time.perf_counter()
                path = engines.build(key, onnx_path, out)
                print(f"{role} ({runtime}): built in {time.perf_counter() - t0:.1f} s: {path}")
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
