# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# onnxruntime-web for `pansynth export --painter` (the in-browser painter): the pinned npm package,
# unpacked into vendor/ (ignored by git: its wasm file is 14 MB). Nothing is fetched at run time.
ORT_WEB_VERSION := 1.30.0
ORT_WEB_DIR := vendor/onnxruntime-web
ORT_WEB_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm package.json

.PHONY: demo test bench lint clean browser ort-web gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pansynth demo --out demo_out

test: $(STAMP) browser ort-web
	$(BIN)/python -m pytest -q

# Debian's chromium + chromedriver for the page tests of `pansynth serve` (tests/serve). Nothing
# happens when they are there; where they cannot be installed (not root, no apt) those tests skip.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
			|| echo "note: could not install chromium; the browser tests of tests/serve will be skipped"; \
	else echo "note: no chromium and no root apt-get; the browser tests of tests/serve will be skipped"; fi

# Where npm is missing or offline, the in-browser painter tests skip (saying why).
ort-web: $(ORT_WEB_DIR)/.version-$(ORT_WEB_VERSION)

$(ORT_WEB_DIR)/.version-$(ORT_WEB_VERSION):
	@if command -v npm >/dev/null 2>&1; then \
		rm -rf $(ORT_WEB_DIR) vendor/.ort-web-pack && mkdir -p vendor/.ort-web-pack $(ORT_WEB_DIR) && \
		(cd vendor/.ort-web-pack && npm pack --silent onnxruntime-web@$(ORT_WEB_VERSION) >/dev/null) && \
		tar -xzf vendor/.ort-web-pack/onnxruntime-web-$(ORT_WEB_VERSION).tgz -C vendor/.ort-web-pack && \
		for f in $(ORT_WEB_FILES); do cp vendor/.ort-web-pack/package/dist/$$f $(ORT_WEB_DIR)/ 2>/dev/null \
			|| cp vendor/.ort-web-pack/package/$$f $(ORT_WEB_DIR)/; done && \
		rm -rf vendor/.ort-web-pack && touch $@ \
		|| echo "note: could not fetch onnxruntime-web@$(ORT_WEB_VERSION); the in-browser painter tests will be skipped"; \
	else echo "note: no npm; the in-browser painter tests (onnxruntime-web) will be skipped"; fi

bench: $(STAMP)
	$(BIN)/python -m pansynth.bench
	$(BIN)/python -m pansynth.ops._triton.report || echo "note: the kernel report needs triton with its CUDA backend"

# On a machine with a CUDA GPU: the CUDA tests, the kernel check and the CUDA benchmark rows, each
# under a time limit, results under $(OUT) (scripts/gpu_check.sh says what runs).
OUT ?= gpu_out
gpu-check:
	OUT=$(OUT) bash scripts/gpu_check.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf demo_out .pytest_cache
