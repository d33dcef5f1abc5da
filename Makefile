# Two user-facing commands: `make demo` and `make test`. Both set up .venv/ first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# franky-sim (the Franka simulator the hardware tests start) needs numpy>=2.2: its own venv.
FRANKY_SIM := .venv-franky-sim/bin/franky-sim
PYTEST_ARGS ?=

.PHONY: demo test setup system-deps clean franky-sim

demo: $(STAMP)
	$(VENV)/bin/vla demo

test: $(STAMP) $(FRANKY_SIM)
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# The venv is rebuilt only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt .ci/system-deps.sh
	bash .ci/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch/torchvision first, pinned: pip takes them from local disk; an unpinned resolve downloads GBs.
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

franky-sim: $(FRANKY_SIM)

# Not fatal: without it only the Franka driver tests skip, saying how to build it.
$(FRANKY_SIM): hardware/franka/sim-requirements.txt
	-$(PYTHON) -m venv .venv-franky-sim && .venv-franky-sim/bin/pip install --quiet -r hardware/franka/sim-requirements.txt && touch $(FRANKY_SIM)

system-deps:
	bash .ci/system-deps.sh

clean:
	rm -rf $(VENV) .venv-franky-sim demo-out .pytest_cache
