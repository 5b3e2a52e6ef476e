# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A LongCLIP checkpoint: Hub id, local .pt file or folder, or gs:// URI.
MODEL ?= BeichenZhang/LongCLIP-L-336px
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=
BENCH_ARGS ?=

# The BigQuery API emulator the tests start; its pins clash with Beam's, so it has a venv of its own.
BQ_VENV ?= .venv-bqemulator

.PHONY: venv dev bqemulator browser demo demo-offline lint test test-fast bench bench-streaming bench-large-images bench-long-lines generated clean

# The runtime (requirements.txt), enough for the job; dev adds the tests' and linters' tools.
venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

bqemulator: $(BQ_VENV)/.installed

$(BQ_VENV)/.installed: tests/bqemulator-requirements.txt
	test -x $(BQ_VENV)/bin/python || $(PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/python -m pip install --quiet -r tests/bqemulator-requirements.txt
	touch $@

# Headless Chromium (Debian's package), which the report's test opens report.html in. Needs root, as CI has.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

demo: venv
	$(PY) -m pipeline --input examples/captions.jsonl --image_root examples --output $(DEMO_OUT)/scored --model "$(MODEL)" --overwrite
	@echo "Scored records: $(DEMO_OUT)/scored-*.jsonl; malformed lines: $(DEMO_OUT)/scored.dead_letter-*.jsonl"

# The same job with no network: a tiny random checkpoint made here. Its scores are meaningless.
demo-offline: venv
	$(PY) -m transforms.testing.checkpoints out/tiny-random-longclip.pt
	$(MAKE) demo MODEL=out/tiny-random-longclip.pt DEMO_OUT=out/demo-offline

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint bqemulator browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick tier: no emulators, no browser, no whole-job runs (under 3 minutes here); CI runs `make test`.
test-fast: dev
	$(PY) -m pytest -m "not emulator and not browser and not slow" $(PYTEST_ARGS)

# Side-by-side timings on this machine (LongCLIP-B/16 shapes, CPU, a few minutes); GPU: bench/gpu.sh.
bench: venv
	$(PY) -m bench $(BENCH_ARGS)

# Streaming latency and throughput on the Pub/Sub and BigQuery emulators (BENCH_ARGS: e.g. --arch B16).
bench-streaming: venv bqemulator
	$(PY) -m bench.streaming $(BENCH_ARGS)

# Peak memory of the job on eight 9000x9000 PNGs (at the default pixel limit) by --prepare_threads.
bench-large-images: venv
	$(PY) -m bench.large_images $(BENCH_ARGS)

# One long JSONL line through Beam's text reader and through the job's (pipeline/io/lines.py), side by side.
bench-long-lines: venv
	$(PY) -m bench.long_lines $(BENCH_ARGS)

# The flag table of docs/flags.md and the Flex Template metadata, from the flag declarations (pipeline/cli/).
generated: venv
	$(PY) -m pipeline.cli.generated --write

clean:
	rm -rf $(VENV) $(BQ_VENV) out .pytest_cache
