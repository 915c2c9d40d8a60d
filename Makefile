PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi

.PHONY: install chromium run test lint audit worker cron periodic translations bench

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
chromium:
	@test -x /usr/bin/chromium || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; }

run: install
	$(BIN)/flask db upgrade
	$(BIN)/flask demo load
	$(BIN)/flask run --host 127.0.0.1 --port 5000

test: install chromium
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Known vulnerabilities in the installed dependencies, from PyPI's advisory data. --strict: a
# package that could not be checked (service unreachable, unknown version) fails the audit too.
audit: install
	$(BIN)/pip-audit --strict --progress-spinner off

worker: install
	$(BIN)/rq worker --url "$$REDIS_URL" default

cron: install
	$(BIN)/rq cron --url "$$REDIS_URL" backoffice.cron_config

periodic: install
	$(BIN)/flask jobs run-periodic --loop

translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --sort-output -o translations/messages.pot .
	$(BIN)/pybabel update -i translations/messages.pot -d translations --width 100 --ignore-obsolete --no-fuzzy-matching
	$(BIN)/pybabel compile -d translations

# Every benchmark runs even when one misses its target; the target fails if any did. All but the
# scheduler's need PostgreSQL on 127.0.0.1 (private databases bench_api, bench_claim, bench_lists)
# and the API's Redis database 7.
bench: install
	@status=0; \
	for script in scheduler_bench api_bench claim_bench list_pages_bench; do \
	  echo "== bench/$$script.py"; $(BIN)/python bench/$$script.py || status=1; \
	done; \
	exit $$status
