# FaceCore: the two commands a new machine needs are `make serve` and `make test`.
# Everything lives in .venv, made from this machine's python3. Re-running is cheap: the package is
# rebuilt only when a source file changed, incrementally (scikit-build-core keeps build/).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facecore-installed
BUILD_DEPS := "scikit-build-core>=0.10" "pybind11>=2.12" ninja
SOURCES := $(shell find cpp python -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.h' -o -name '*.pyi' -o -name 'CMakeLists.txt' \)) CMakeLists.txt pyproject.toml

export FACECORE_PORT ?= 8300
export FACECORE_DATA ?= ./data

.PHONY: serve test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q $(BUILD_DEPS)
	$(BIN)/python -m pip install -q --no-build-isolation ".[serve,test]"
	touch $@

install: $(STAMP)

serve: install
	$(BIN)/facecore-server --port $(FACECORE_PORT) --data $(FACECORE_DATA)

test: install
	$(BIN)/python -m pytest tests

bench: install
	$(BIN)/python -m pip install -q ".[bench]" --no-build-isolation
	$(BIN)/python -m pytest bench --benchmark-only --benchmark-columns=min,median,mean,rounds $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) .pytest_cache .benchmarks
