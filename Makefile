# The README's two commands. Only Python >= 3.10 is needed on the machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test bench clean

$(VENV)/.installed-core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-core
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed-core
	$(PY) -m jaxlatent.demo --out $(DEMO_DIR)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
