PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi

.PHONY: install chromium run test lint worker cron periodic translations bench

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

bench: install
	$(BIN)/python bench/scheduler_bench.py
