# Two entry points do all set-up on a fresh clone: `make reproduce` and `make test`.
# Both create (or reuse) the virtualenv $(VENV) with the package installed editable plus dev tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ibsr-installed

.PHONY: install reproduce test clean-venv export clean readme

install: $(STAMP)

$(STAMP): settings.ini setup.py constraints.txt tools/install.py tools/ensure_chromium.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python tools/install.py           # pip install -c constraints.txt -e ".[dev]", through uv when it can be had
	$(BIN)/python -c "import torch, torchvision, open_clip, faiss, trimesh; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| open_clip', open_clip.__version__)"
	bash tools/ensure_chromium.sh
	touch $(STAMP)

# The main job: regenerate the paper's tables and figures on the built-in benchmark (quick mode).
reproduce: install
	$(BIN)/ibsr reproduce --quick --out outputs/paper

# The test suite (what .ci/run runs).
test: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh

export: install
	$(BIN)/nbdev_export
clean: install
	$(BIN)/nbdev_clean
readme: install
	$(BIN)/python tools/make_readme.py

clean-venv:
	rm -rf $(VENV)
