# The two commands of the README, and what they need. Every target installs what it uses.
#   make demo   set up, prepare the bundled digits, train a ResNet-20, log to MLflow (SQLite)
#   make test   set up and run the default test suite (slow tests: make test-all)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies in this platform's wheel cache; GPU machines pass TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
# dev brings what the demo and the tests use (plot, demo, k8s extras, pytest, linters); DALI's CUDA 12
# build (cuda12) runs CPU-only as well as its CUDA 13 one.
EXTRAS ?= dev,cuda12,ffcv,deepspeed
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH_SPEC) $(EXTRAS)' | cksum | cut -d' ' -f1)
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-all test-ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@# FFCV compiles against libturbojpeg and OpenCV (docs/platform.md): install them when missing.
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

demo: setup
	$(BIN)/dtrain demo

# The gate: lint and types first (seconds), then the default suite under coverage.py, which
# follows the subprocesses (torchrun workers, CLI runs) through [tool.coverage.run] patch.
test: setup lint
	rm -rf .coverage-data
	OMP_NUM_THREADS=1 $(BIN)/python -m coverage run -m pytest -m "not slow" $(PYTEST_ARGS)
	@$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test-all: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The MLflow run page in headless Chromium (Debian's package, ~10 s to install); also refreshes
# the README's screenshot, docs/img/mlflow-run-page.png.
test-ui: setup
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }
	DTRAIN_DOCS_IMG=docs/img OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/integration/test_mlflow_ui.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .coverage-data
