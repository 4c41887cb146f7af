# The README's two commands. Only Python >= 3.10 is needed on the machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DEMO_DIR ?= runs/demo
# pretrained: the CT path analyses the shipped validation DCGAN; tiny: trains it from scratch.
DEMO_MODELS ?= pretrained
# pytest-xdist workers for `make test` (auto: one per CPU core).  Whole test files go to
# a worker (--dist loadfile), so each module fixture is built once; the conftest orders
# the files, longest first, and --no-loadscope-reorder keeps that order.
TEST_WORKERS ?= auto

.PHONY: demo test bench validate clean

$(VENV)/.installed-core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-core
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed-core
	$(PY) -m jaxlatent.demo --out $(DEMO_DIR) --models $(DEMO_MODELS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py

# The validation study (docs/VALIDATION.md): hours of CPU training; resumes when re-run.
validate: $(VENV)/.installed-core
	$(PY) validation/run.py
	$(PY) validation/collect.py

clean:
	rm -rf $(VENV) runs .pytest_cache
