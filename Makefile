# pgconductor: PGXS build of the PL/pgSQL extension plus the dev/test entry points.
# `make` (or `make help`) lists the targets. Every target that needs a database uses
# DATABASE_URL when it is set, and otherwise a private cluster (scripts/cluster.sh).

SHELL      := /bin/bash
PG_CONFIG ?= pg_config
EXTENSION  = pgconductor
EXTVERSION := $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)

SRC        := $(sort $(wildcard extension/src/*.sql))
BUILT      := extension/build/$(EXTENSION)--$(EXTVERSION).sql
FROZEN     := extension/versions/$(EXTENSION)--$(EXTVERSION).sql

# PGXS: the built script of the current version, plus the frozen bases and the update
# chain; the frozen copy of the current version is filtered out (installed once, as built).
DATA_built  = $(BUILT)
DATA        = $(filter-out $(FROZEN),$(wildcard extension/updates/*.sql extension/versions/*.sql))
EXTRA_CLEAN = extension/build $(ISOLATION_OUTDIR) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov

# PGXS isolation tests (`make installcheck`): tests/isolation/specs/*.spec against
# tests/isolation/expected/*.out. `:=` keeps ISOLATION undefined when there are no specs.
REGRESS          =
ISOLATION       := $(basename $(notdir $(wildcard tests/isolation/specs/*.spec)))
ISOLATION_OUTDIR = $(CURDIR)/tests/isolation/output_iso
ISOLATION_OPTS   = --inputdir=tests/isolation --outputdir=$(ISOLATION_OUTDIR) --load-extension=$(EXTENSION)

# PGXS needs pg_config; before `make deps` has installed PostgreSQL only the
# targets that do not build (help, deps, venv, lint, clean) work.
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
# The database pg_isolation_regress drops and recreates on every run.
ISOLATION_TESTDB = pgconductor_isolation
# Installing into /usr/share/postgresql needs root: use sudo when that dir is not
# writable (not root, no DESTDIR).
ifeq ($(DESTDIR)$(filter 0,$(shell id -u))$(shell test -w '$(datadir)/extension' && echo w),)
ifneq ($(shell command -v sudo 2>/dev/null),)
INSTALL_DATA := sudo $(INSTALL_DATA)
MKDIR_P      := sudo $(MKDIR_P)
endif
endif
else
all install installcheck:
	@echo "pg_config ($(PG_CONFIG)) not found: run 'make deps' first" >&2; exit 1
clean:
	rm -rf $(EXTRA_CLEAN)
endif

.DEFAULT_GOAL := help
.PHONY: help deps venv build install db-up db-down psql freeze check-frozen \
        test test-sql test-sql-only test-isolation test-python test-e2e soak fuzz lint demo clean

# Targets that touch the database: their shared prerequisites.
DB_PREREQS = deps install $(if $(DATABASE_URL),,db-up)

help: ## show this list of targets
	@echo "pgconductor $(EXTVERSION): make TARGET (DATABASE_URL=... to use an existing server)"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | \
	  awk -F':.*## ' '{ printf "  %-15s %s\n", $$1, $$2 }'

deps: ## install missing apt packages and the .venv (quiet when all is there)
	@scripts/deps.sh

venv: ## create/refresh .venv from python/pyproject.toml (pip install -e 'python[dev]')
	@scripts/deps.sh venv

build: $(BUILT) ## concatenate extension/src/*.sql into extension/build/pgconductor--VERSION.sql

$(BUILT): $(SRC) $(EXTENSION).control
	@test -n "$(SRC)" || { echo "no SQL sources in extension/src/" >&2; exit 1; }
	@mkdir -p $(@D)
	@{ echo '\echo Use "CREATE EXTENSION $(EXTENSION)" to load this file. \quit'; \
	   for f in $(SRC); do echo; echo "-- source: $$f"; cat "$$f"; done; } > $@.tmp
	@mv $@.tmp $@
	@echo "built $@ from $(words $(SRC)) file(s)"

# `install` is PGXS's (depends on `all`, which builds $(BUILT)); this line only documents it.
install: ## install control file and SQL scripts into PostgreSQL's share dir (sudo if not root)

freeze: build ## copy the built script to extension/versions/ (refuses to change a frozen one)
	@mkdir -p extension/versions
	@if [ -e $(FROZEN) ] && ! cmp -s $(BUILT) $(FROZEN); then \
	  echo "$(FROZEN) exists and differs from the build: released versions never change" >&2; exit 1; fi
	@cp $(BUILT) $(FROZEN) && echo "frozen $(FROZEN)"

check-frozen: build ## fail if a frozen version changed or extension/updates/ does not chain to it
	@scripts/check-frozen.sh $(EXTVERSION) $(BUILT)

db-up: ## start the private PostgreSQL 15 cluster (no-op when DATABASE_URL is set)
	@if [ -n "$$DATABASE_URL" ]; then echo "DATABASE_URL is set: not starting the private cluster"; \
	  else scripts/cluster.sh start; fi

db-down: ## stop the private cluster (its data stays in the temp dir)
	@scripts/cluster.sh stop

psql: ## open psql on the database (DATABASE_URL or the private cluster)
	@$(MAKE) -s --no-print-directory $(DB_PREREQS) >/dev/null  # quiet: errors only
	@. scripts/env.sh && exec psql "$$DATABASE_URL"

test-sql: $(DB_PREREQS) ## run the pgTAP suite (tests/sql) with pg_prove on a fresh database
	@scripts/test-sql.sh

test-sql-only: $(DB_PREREQS) ## pgTAP and integration layers on plain-SQL installs (schema install --sql-only)
	@scripts/test-sql-only.sh

test-isolation: $(DB_PREREQS) ## run the isolation specs (tests/isolation) via PGXS installcheck
	@scripts/test-isolation.sh

test-python: $(DB_PREREQS) ## run pytest tests/python with DATABASE_URL exported
	@scripts/test-python.sh

# The e2e suite restarts its database (08-database-restart, --chaos), so it always runs on a
# private cluster of its own, even when DATABASE_URL points the other layers elsewhere.
test-e2e: deps install ## tower-defense e2e scenarios (tests/e2e) on their own private cluster (port 55440)
	@env -u DATABASE_URL tests/e2e/run-all.sh --sdk=py

soak: deps install ## long e2e soak, not in CI: 100k executions over 5 min under --chaos
	@env -u DATABASE_URL E2E_SCENARIO_TIMEOUT=1800 tests/e2e/run-scenario.sh tests/e2e/soak.sh --sdk=py --chaos

# The fuzz layer runs bounded (25 examples per function, derandomized) inside test-python;
# this is the long run: more examples and a random seed (PGCONDUCTOR_FUZZ_SEED replays one),
# then the call and outcome counts. PGCONDUCTOR_FUZZ_REPORT=FILE writes the findings as Markdown.
fuzz: $(DB_PREREQS) ## long fuzz of every public SQL function, not in CI (PGCONDUCTOR_FUZZ_EXAMPLES, default 400)
	@. scripts/env.sh && \
	  PGCONDUCTOR_FUZZ_EXAMPLES=$${PGCONDUCTOR_FUZZ_EXAMPLES:-400} \
	  PGCONDUCTOR_FUZZ_SEED=$${PGCONDUCTOR_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	  .venv/bin/pytest -c python/pyproject.toml --rootdir=. tests/python/fuzz -q -p no:cacheprovider

lint: ## bash -n + shellcheck on scripts; ruff, ruff format --check, mypy --strict on python/
	@scripts/lint.sh

# Every step CI runs, in order, as sub-makes; lint runs beside test-sql and test-isolation
# (scripts/test-all.sh). Each step prints its time: the whole must stay under 10 minutes.
test: ## everything CI runs: deps install db-up check-frozen test-sql test-isolation test-sql-only (lint beside them) test-python test-e2e
	@scripts/test-all.sh "$(MAKE)"

demo: $(DB_PREREQS) ## the main job: SQL round trip, then worker processes draining a 20,000-execution wave
	@scripts/demo.sh

.PHONY: bench bench-quick
bench: deps ## benchmark vs peers on an own durable cluster (~20 min): bench/results/REPORT.md
	@bench/run.sh full

bench-quick: deps ## the same at small N (~6 min): bench/results/REPORT-quick.md
	@bench/run.sh quick

# `clean` is PGXS's (removes DATA_built and EXTRA_CLEAN); this line only documents it.
clean: ## remove build output, isolation results and tool caches (not the cluster: see db-down)
