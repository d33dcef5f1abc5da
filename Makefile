# Two user-facing commands: `make demo` and `make test`. Both set up .venv/ first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test setup system-deps clean

demo: $(STAMP)
	$(VENV)/bin/vla demo

test: $(STAMP)
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

system-deps:
	bash .ci/system-deps.sh

clean:
	rm -rf $(VENV) demo-out .pytest_cache
