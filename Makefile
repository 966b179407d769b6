# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pansynth demo --out demo_out

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Debian's chromium + chromedriver for the page tests of `pansynth serve` (tests/serve). Nothing
# happens when they are there; where they cannot be installed (not root, no apt) those tests skip.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
			|| echo "note: could not install chromium; the browser tests of tests/serve will be skipped"; \
	else echo "note: no chromium and no root apt-get; the browser tests of tests/serve will be skipped"; fi

bench: $(STAMP)
	$(BIN)/python -m pansynth.bench
	$(BIN)/python -m pansynth.ops._triton.report --quick || echo "note: the kernel report needs triton with its CUDA backend"

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf demo_out .pytest_cache
