# The README's two commands: `make demo` (the main job) and `make test` (the whole suite); both set up first.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
HOROVODRUN := $(VENV)/bin/horovodrun
# Plain mpirun as root needs these two; --oversubscribe lets 2 ranks share fewer cores.
MPIRUN := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: setup demo test test-fast test-parallel lint docs

setup:
	POISSON_TF_VENV=$(VENV) scripts/setup.sh

demo: setup
	scripts/demo.sh

# Lint, the docs, the parallel suite under all three launchers, then the single-process suite (its summary line is
# last; it does not collect tests/parallel, which runs only under a launcher with 2 or more workers).
test: setup
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory test-parallel
	$(PY) -m pytest $(PYTEST_FLAGS) tests

test-fast: setup
	$(PY) -m pytest $(PYTEST_FLAGS) tests

# Pyflakes, syntax and bugbear checks (closures in benchmark loops are called in the same iteration: B023), and no
# import cycle inside the package, function-level imports included (scripts/check_imports.py).
lint:
	$(VENV)/bin/ruff check --quiet --select F,E9,B --ignore B905,B023 --line-length 120 poisson_tf tests benchmarks scripts
	$(PY) scripts/check_imports.py poisson_tf

test-parallel:
	$(HOROVODRUN) -np 2 -H localhost:2 $(PY) -m pytest $(PYTEST_FLAGS) tests/parallel
	$(HOROVODRUN) --gloo -np 2 -H localhost:2 $(PY) -m pytest $(PYTEST_FLAGS) tests/parallel
	$(MPIRUN) -np 2 -x PATH $(PY) -m pytest $(PYTEST_FLAGS) tests/parallel

# The documentation site (docs/_build/html; Sphinx warnings are errors), then an sdist in a temporary directory and
# `twine check` on it: README.rst is the package's PyPI description (setup.py's long_description). No network.
docs: setup
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  { $(PY) -m build --sdist --no-isolation --outdir "$$tmp" . > "$$tmp/build.log" 2>&1 \
	    || { cat "$$tmp/build.log" >&2; exit 1; }; } && \
	  $(VENV)/bin/twine check --strict "$$tmp"/*.tar.gz
