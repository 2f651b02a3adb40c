# Two commands for a newcomer: `make demo` and `make test`. Both set everything up first and are idempotent.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: setup system demo docs lessons test sync nbtest robust pytest readme bench margins clean

setup: $(STAMP) system

$(STAMP): setup.py settings.ini constraints.txt pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || tools/check_disk.sh 7
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade "pip>=23.2"
	$(PIP) torch torchvision
	$(PIP) -e ".[dev]"
	@touch $(STAMP)

system:
	@tools/install_system.sh

demo: setup
	$(PY) tools/demo.py runs/demo

# The course as a book: the lessons as nbdev processes them, with their stored outputs, as a static site built offline
# by Jupyter Book (warnings are errors) into runs/docs/_build/html/index.html. Open it as a file or serve the folder.
docs: setup
	OMP_NUM_THREADS=1 $(PY) tools/build_docs.py runs/docs

# Run every lesson in a real kernel and store its outputs (stamped) in its notebook; commit the result.
lessons: setup
	$(PY) tools/run_lessons.py

sync: setup
	@tools/check_sync.sh
	@$(PY) tools/make_readme.py --check

# Two notebooks run at once on 2 cores: one torch thread each (two each oversubscribe and spin, ~10x slower).
nbtest: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev_test --n_workers 2

pytest: setup
	$(PY) -m pytest -q -ra tests

# A lesson as another learner's machine may run it: another seed, 2 torch threads (default: the recipe lesson).
# `make test` does this for lesson 2 in tests/test_installed_wheel.py; bench/margins.py measures seeds 0-4 x threads 1, 2.
LESSON ?= nbs/12_lesson2.ipynb
robust: setup
	OMP_NUM_THREADS=2 LESSONLIB_SEED=3 $(VENV)/bin/nbdev_test --path $(LESSON)

test: sync nbtest pytest

readme: setup
	$(PY) tools/make_readme.py

margins: setup
	$(PY) bench/margins.py

bench: setup
	@for b in $(filter-out bench/margins.py bench/common.py,$(wildcard bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs _proc _docs .pytest_cache
