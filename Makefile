# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Both create and use the virtual environment .venv/ in the repository root.
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

.PHONY: install demo test
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/merc demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
