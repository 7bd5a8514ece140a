# The two commands of the README: `make demo` and `make test` (then `make app`: the web demo over `make demo`'s
# models). Each creates .venv at the repository root, installs CPU torch first where there is no GPU (a bare
# `torch` requirement would pull a CUDA build), then the package, then the data it needs (Debian's
# dataset-fashion-mnist; for `make test` also Debian's chromium, for the web demo's browser test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
TORCH_VERSION ?= 2.13.0

CHROMIUM_PACKAGES := chromium chromium-driver

.PHONY: demo app test test-all bench lint data browser install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.4"; \
	else \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install -q -e ".[test,bench,dev,app]"
	touch $(STAMP)

install: $(STAMP)

data:
	@if [ ! -f "$(FASHION_MNIST)" ]; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# headless Chromium and its driver for the web demo's browser test (tests/test_app.py, marker `browser`)
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "installing Debian packages $(CHROMIUM_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(CHROMIUM_PACKAGES); \
	fi

demo: $(STAMP) data
	$(PY) examples/demo.py --output-dir outputs/demo

# the web demo on http://127.0.0.1:7860 over the models of `make demo`
app: $(STAMP) data
	$(PY) examples/app.py --demo-dir outputs/demo

test: $(STAMP) data browser
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP) data browser
	$(PY) -m pytest -q -m "not gpu"

bench: $(STAMP)
	$(PY) benchmarks/bench_quantizer.py

lint: $(STAMP)
	$(VENV)/bin/ruff check fullvq_hf tests examples benchmarks

clean:
	rm -rf $(VENV) outputs
