# The two commands of the README: `make demo` and `make test`. Each creates .venv at the repository root,
# installs CPU torch first where there is no GPU (a bare `torch` requirement would pull a CUDA build),
# then the package, then the data it needs (Debian's dataset-fashion-mnist).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
TORCH_VERSION ?= 2.13.0

.PHONY: demo test test-all bench lint data install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.4"; \
	else \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install -q -e ".[test,bench,dev]"
	touch $(STAMP)

install: $(STAMP)

data:
	@if [ ! -f "$(FASHION_MNIST)" ]; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: $(STAMP) data
	$(PY) examples/demo.py --output-dir outputs/demo

test: $(STAMP) data
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP) data
	$(PY) -m pytest -q -m "not gpu"

bench: $(STAMP)
	$(PY) benchmarks/bench_quantizer.py

lint: $(STAMP)
	$(VENV)/bin/ruff check fullvq_hf tests examples benchmarks

clean:
	rm -rf $(VENV) outputs
