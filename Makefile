# A thin index of the README's commands; .ci/run calls `make test` too.
# POSIX make: no GNU extensions. The stamp files record that .venv holds what
# pyproject.toml asks for, so a second run installs nothing.

.POSIX:

PYTHON = python3
VENV = .venv
BIN = $(VENV)/bin
CHECKED = etl tests migrations

all: test

# Sync the catalog into sqlite:///catalog.db (or ETL_DATABASE_URL); the token comes from
# DIGITALOCEAN_ACCESS_TOKEN.
sync: $(VENV)/.installed
	$(BIN)/etl sync

# Try etl without a token: a week of simulated catalog history, served by a fake API on
# 127.0.0.1, loaded into ./demo.db (a previous demo.db is replaced), and ./demo-report.html.
demo: $(VENV)/.installed
	rm -f demo.db demo.db-wal demo.db-shm demo.db.lock
	$(BIN)/etl demo

# Lint, format check, type check and the tests (PostgreSQL and MariaDB tests run when
# ETL_TEST_POSTGRES_URL / ETL_TEST_MYSQL_URL are set; .ci/run sets them).
test: $(VENV)/.installed-test
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -rs -n auto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

# The test extras include the package itself, so this install satisfies `make sync` too.
$(VENV)/.installed-test: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,postgres,mysql]'
	touch $@ $(VENV)/.installed

.PHONY: all sync demo test clean
