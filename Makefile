# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11:
#   make run   - create .venv, install the pinned requirements, run the workflow on the embedded default
#   make test  - same set-up, then the test suite
#   make lint  - same set-up, then the checks of code and workflow (snakemake --lint, snakefmt, ruff)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ftbench-installed
CORES ?= 2

export OMP_NUM_THREADS := 1

.PHONY: run test lint setup dry-run-cluster clean-results

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	# DeepSpeed compiles its CPU communication op on first use (about a minute): do it at set-up.
	$(BIN)/python scripts/prebuild_deepspeed.py
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --cores $(CORES)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# One line per check; each fails the target. snakemake --lint may only report the conda/container
# finding that docs/cluster.md answers (ci/check_lint.py prints any other).
lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python ci/check_lint.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakefmt --check .
	$(BIN)/ruff check .

dry-run-cluster: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile slurm -n --quiet rules all

clean-results:
	rm -rf results logs .snakemake
