#!/usr/bin/env bash
# The GPU engine's device check (issue 15): one script, two steps.
#
#   tools/gpu_check.sh prepare   here, before the device call: copies into .gpu/ (git-ignored) what
#                                the bare GPU machine lacks (TensorRT's public headers, the test
#                                images, the onnx2torch wheel) and prints the device command.
#   tools/gpu_check.sh compile   here, no GPU needed: type-checks the device code (the TensorRT runner
#                                against each TensorRT version, runner.cpp's CUDA device queries, the
#                                LibTorch runner's CUDA path when torch is installed) against CUDA
#                                13's runtime headers from PyPI.
#   tools/gpu_check.sh run       on the lent GPU machine (docs/gpu.md): builds facecore with
#                                FACECORE_GPU=ON, compile-checks the TensorRT runner against each
#                                carried TensorRT version, runs the C++ engine tests (ctest, cuda too),
#                                builds the TorchScript engines if missing, runs tests/facecore/test_gpu.py
#                                (the gpu-marked parity tests included) and bench/gpu_pipeline.py, and
#                                writes one report, $OUT/gpu_check.json (plus its log and the raw parts).
#
# `run` also works without a GPU (GPU_CHECK_BACKEND=torch: the engine on the cpu; CUDA_INCLUDE=...
# for the TensorRT compile check): that is how the script itself is checked on a CPU machine.
# Every step is time-boxed and recorded; a failed step does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/build/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/facecore-site}
BACKEND=${GPU_CHECK_BACKEND:-cuda}
SECONDS_PER=${GPU_CHECK_SECONDS:-2}
ENGINES=${FACECORE_ENGINES:-$PWD/models/engines}
GPU_DIR=.gpu
WORK=/tmp/facecore-gpu-check # step records; $OUT gets only the report, the log and their sources
BUDGET=${GPU_CHECK_BUDGET:-450} # seconds for all of `run`: under 8 minutes with the machine's start

# TensorRT's public headers, every carried version, into .gpu/tensorrt (compile checks only).
headers() {
    local v
    for v in ../shared/third_party/tensorrt/*/; do
        v=$(basename "$v")
        mkdir -p "$GPU_DIR/tensorrt/$v"
        cp -r "../shared/third_party/tensorrt/$v/include" "$GPU_DIR/tensorrt/$v/"
    done
}

prepare() {
    local shared=../shared
    mkdir -p "$GPU_DIR/data/misc" "$GPU_DIR/data/lfw/images" "$GPU_DIR/wheels"
    headers
    for f in couple.jpg bald_guys.jpg obama_and_biden.jpg two_people.jpg; do
        cp "$shared/data/misc/$f" "$GPU_DIR/data/misc/"
    done
    mkdir -p "$GPU_DIR/data/lfw/images/Aaron_Sorkin"
    cp "$shared/data/lfw/images/Aaron_Sorkin/Aaron_Sorkin_0001.jpg" "$GPU_DIR/data/lfw/images/Aaron_Sorkin/"
    # tools/build_engines.py converts with onnx2torch (pure Python; the machine has torchvision, onnx).
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$GPU_DIR/wheels" onnx2torch==1.5.15
    [ -f models/onnx/manifest.json ] || { echo "build the models first: make models" >&2; exit 1; }
    du -sh "$GPU_DIR" models/onnx
    cat <<'CMD'
Device call (tool `run`), carry [".gpu", "models/onnx"], timeout_s 600:
  bash tools/gpu_check.sh run
CMD
}

# CUDA's runtime headers from PyPI (nvidia-cuda-runtime, nvidia-cuda-crt), and the one generated
# header of c10/cuda that a CPU wheel of torch leaves out, for compile checks without a toolkit.
compile_check() {
    local cuda=build/gpu-compile torch_include rc=0 # not under .gpu: the device has its own CUDA
    if [ ! -f "$cuda/nvidia/cu13/include/crt/host_defines.h" ]; then
        mkdir -p "$cuda"
        "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$cuda" \
            "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" || return 1
        for w in "$cuda"/*.whl; do "$PY" -m zipfile -e "$w" "$cuda"; done
    fi
    [ -d "$GPU_DIR/tensorrt" ] || headers
    OUT=$cuda WORK=$cuda CUDA_INCLUDE=$cuda/nvidia/cu13/include
    mkdir -p "$OUT"
    : >"$WORK/tensorrt.tsv"
    tensorrt_check || rc=1
    cat "$WORK/tensorrt.tsv"
    # The runner-independent device queries (cuda_device_count/name) of a build with both CUDA
    # runners.
    if c++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Icpp/trt_engine/include -Icpp/trt_engine/src \
        -isystem "$CUDA_INCLUDE" -DFACECORE_HAVE_TORCH -DFACECORE_TORCH_CUDA -DFACECORE_HAVE_TENSORRT \
        cpp/trt_engine/src/runner.cpp; then
        echo "runner-cuda	0"
    else
        echo "runner-cuda	1"
        rc=1
    fi
    torch_include=$("$PY" -c 'import torch.utils.cpp_extension as c; print(" ".join(c.include_paths()))' 2>/dev/null)
    if [ -n "$torch_include" ]; then
        mkdir -p "$cuda/shim/c10/cuda/impl"
        printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$cuda/shim/c10/cuda/impl/cuda_cmake_macros.h"
        local flags=()
        for d in $torch_include; do flags+=(-isystem "$d"); done
        if c++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Icpp/trt_engine/include -Icpp/trt_engine/src \
            -isystem "$cuda/shim" "${flags[@]}" -isystem "$CUDA_INCLUDE" \
            -DFACECORE_HAVE_TORCH -DFACECORE_TORCH_CUDA cpp/trt_engine/src/torch_runner.cpp; then
            echo "libtorch-cuda	0"
        else
            echo "libtorch-cuda	1"
            rc=1
        fi
    fi
    return "$rc"
}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/gpu_check.log"; }

# step NAME LIMIT FUNCTION: runs FUNCTION (in a child bash, so `timeout` can stop it and all it
# started) for at most LIMIT seconds and at most what is left of the budget; its output goes into
# the log, its exit status and seconds into $WORK/steps.tsv (124: out of time).
step() {
    local name=$1 limit=$2 fn=$3 start rc left
    left=$((DEADLINE - $(date +%s) - 20))
    ((limit > left)) && limit=$left
    log "== $name (at most ${limit}s)"
    start=$(date +%s)
    if ((limit <= 0)); then
        rc=124
    else
        timeout "$limit" bash -c "$fn" >>"$OUT/gpu_check.log" 2>&1
        rc=$?
    fi
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$WORK/steps.tsv"
    log "   $name: exit $rc"
    return "$rc"
}

wheels() {
    if compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/facecore-wheels \
            "$GPU_DIR"/wheels/*.whl
    fi
}

build() {
    rm -rf "$SITE"
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip install -q --no-deps --no-build-isolation \
        --target "$SITE" -C cmake.define.FACECORE_GPU="$GPU_MODE" \
        -C build-dir=/tmp/facecore-build .
}

ctests() {
    cmake -S . -B /tmp/facecore-ctest -G Ninja -DFACECORE_PYTHON=OFF -DFACECORE_TESTS=ON \
        -DFACECORE_GPU="$GPU_MODE" -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" &&
        cmake --build /tmp/facecore-ctest --parallel "$(nproc)" &&
        ctest --test-dir /tmp/facecore-ctest --output-on-failure
}

# The TensorRT runner against each carried TensorRT version's headers (no TensorRT library exists on
# these machines: compiled, never linked or run).
tensorrt_check() {
    local v rc=0
    for v in "$GPU_DIR"/tensorrt/*/; do
        v=${v%/}
        if c++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Icpp/trt_engine/include \
            -Icpp/trt_engine/src -isystem "$v/include" -isystem "$CUDA_INCLUDE" \
            -DFACECORE_HAVE_TENSORRT cpp/trt_engine/src/tensorrt_runner.cpp; then
            printf '%s\t0\n' "$(basename "$v")" >>"$WORK/tensorrt.tsv"
        else
            printf '%s\t1\n' "$(basename "$v")" >>"$WORK/tensorrt.tsv"
            rc=1
        fi
    done
    return "$rc"
}

engines() {
    # The engine cache builds what this GPU, torch and precision lack and keeps the rest. On a GPU
    # both precisions: test_gpu.py's parity tests run the cuda engines at fp32 and at fp16.
    local p rc=0
    if [ "$BACKEND" = torch ]; then
        "$PY" tools/build_engines.py --device cpu --out "$ENGINES"
        return
    fi
    for p in fp32 fp16; do
        "$PY" tools/build_engines.py --device cuda --precision "$p" --out "$ENGINES" || rc=1
    done
    return "$rc"
}

pytests() {
    # The tests read ../shared/data, which does not travel: the carried copy stands in for it.
    # test_engines.py's gpu test: each model's cuda engine against ONNX Runtime on the pipeline's
    # own inputs (it builds its engines itself).
    [ -e ../shared/data ] || { mkdir -p ../shared && ln -s "$PWD/$GPU_DIR/data" ../shared/data; }
    FACECORE_ENGINES=$ENGINES "$PY" -m pytest -p no:cacheprovider tests/facecore/test_gpu.py \
        tests/facecore/test_engines.py::test_gpu_engines_match_onnxruntime \
        -rs --junitxml="$OUT/pytest.xml"
}

bench() {
    FACECORE_ENGINES=$ENGINES "$PY" bench/gpu_pipeline.py --backend "$BACKEND" --engines "$ENGINES" \
        --lfw-image "$GPU_DIR/data/lfw/images/Aaron_Sorkin/Aaron_Sorkin_0001.jpg" \
        --seconds "$SECONDS_PER" --out "$OUT/bench.json"
}

report() {
    "$PY" - "$OUT" "$WORK" <<'PYREPORT'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, work = Path(sys.argv[1]), Path(sys.argv[2])
def rows(name):
    p = work / name
    return [l.split("\t") for l in p.read_text().splitlines()] if p.exists() else []
r = {"device": (work / "device.txt").read_text().strip() if (work / "device.txt").exists() else None,
     "steps": {n: {"exit": int(rc), "seconds": int(s)} for n, rc, s in rows("steps.tsv")},
     "tensorrt_compile": {v: "ok" if rc == "0" else "failed" for v, rc in rows("tensorrt.tsv")}}
if (out / "pytest.xml").exists():
    suite = ET.parse(out / "pytest.xml").getroot().find("testsuite")
    r["pytest"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    r["pytest"]["skipped_why"] = [s.get("message") for s in suite.iter("skipped")]
if (out / "bench.json").exists():
    r["bench"] = json.loads((out / "bench.json").read_text())
log = (out / "gpu_check.log").read_text().splitlines()
r["log_tail"] = log[-60:]
(out / "gpu_check.json").write_text(json.dumps(r, indent=1))
print(json.dumps({k: r[k] for k in ("device", "steps", "tensorrt_compile")} | {"pytest": r.get("pytest")}))
PYREPORT
}

run() {
    DEADLINE=$(($(date +%s) + BUDGET))
    mkdir -p "$OUT" "$WORK"
    : >"$OUT/gpu_check.log"
    : >"$WORK/steps.tsv"
    : >"$WORK/tensorrt.tsv"
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >"$WORK/device.txt" 2>&1; then
        GPU_MODE=ON
    else
        echo "no GPU: $(uname -n), cpu" >"$WORK/device.txt"
        GPU_MODE=AUTO
        BACKEND=${GPU_CHECK_BACKEND:-torch}
    fi
    if [ -z "${CUDA_INCLUDE:-}" ] && command -v nvcc >/dev/null; then
        CUDA_INCLUDE=$(dirname "$(dirname "$(command -v nvcc)")")/include
    fi
    CUDA_INCLUDE=${CUDA_INCLUDE:-/usr/local/cuda/include}
    log "device: $(cat "$WORK/device.txt"); python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)' 2>&1)"
    export OUT WORK PY SITE GPU_MODE CUDA_INCLUDE ENGINES BACKEND SECONDS_PER GPU_DIR
    export -f build ctests tensorrt_check engines pytests bench wheels
    export PYTHONPATH=$SITE:/tmp/facecore-wheels${PYTHONPATH:+:$PYTHONPATH}
    export FACECORE_MODELS=$PWD/models/onnx PYTHONUNBUFFERED=1
    step wheels 120 wheels
    step build 240 build
    step tensorrt_compile 90 tensorrt_check
    step ctest 180 ctests
    step engines 150 engines
    step pytest 200 pytests
    step bench 200 bench
    report
}

case "${1:-}" in
prepare) prepare ;;
compile) compile_check ;;
run) run ;;
*)
    echo "usage: $0 prepare|compile|run (docs/gpu.md)" >&2
    exit 2
    ;;
esac
