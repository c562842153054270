# The two commands a newcomer needs (see README):
#   make run    the whole stack, locally: API, exporter, Prometheus, Alertmanager, and Grafana when
#               installed (honcho + Procfile)
#   make test   run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= model
GRAFANA_PORT ?= 3000
PROCFILE ?= Procfile

.PHONY: run serve test model bench dashboards rules clean

run:
	@scripts/bootstrap.sh stack
	@$(BIN)/python -m model.train --if-missing --model-dir $(MODEL_DIR)
	@mkdir -p .run
	@echo "API          http://127.0.0.1:5000  (try: curl -s localhost:5000/model)"
	@echo "API metrics  http://127.0.0.1:9200/metrics"
	@echo "Exporter     http://127.0.0.1:8000/metrics"
	@echo "Prometheus   http://127.0.0.1:9090/classic/graph  (alerts: http://127.0.0.1:9090/classic/alerts)"
	@echo "Alertmanager http://127.0.0.1:9093/api/v2/alerts  (its API; Debian's package has no web UI)"
	@# Grafana joins when a grafana-server is installed; the alerts' dashboard links point at it
	@# (GRAFANA_ROOT_URL), and are left empty without it. honcho reads no .env (-e /dev/null): that
	@# file is compose's, and honcho would let it override the settings given on the command line.
	@# Ctrl-C is the way to stop: this shell outlives it (trap) and honcho's status 130 is success,
	@# so make reports no error (make itself then exits 130, silently, as any Ctrl-C'd program).
	@# The exporter replays the example's rows by default; another model (MODEL_DIR) needs its own
	@# CSV (EXPORTER_CSV, EXPORTER_TARGET), or the stack runs without it rather than stopping.
	@if [ -n "$${EXPORTER_CSV:-}" ] || $(BIN)/python -m model.train --is-example --model-dir $(MODEL_DIR); then \
	  exporter="exporter"; \
	else \
	  echo "Exporter     not started: MODEL_DIR is not the example; set EXPORTER_CSV and EXPORTER_TARGET to replay its rows"; \
	  exporter=""; \
	fi; \
	if $(BIN)/python -m scripts.grafana_local --find >/dev/null 2>&1; then \
	  echo "Grafana      http://127.0.0.1:$(GRAFANA_PORT)  (folder Model serving; anonymous viewers)"; \
	  processes="api $$exporter prometheus alertmanager grafana"; root="$${GRAFANA_ROOT_URL:-http://127.0.0.1:$(GRAFANA_PORT)}"; \
	else \
	  echo "Grafana      not installed: see README, Grafana in local mode"; \
	  processes="api $$exporter prometheus alertmanager"; root="$${GRAFANA_ROOT_URL:-}"; \
	fi; \
	echo "Logs: this terminal (honcho prefixes each line with its process). Ctrl-C stops everything."; \
	trap : INT; \
	MODEL_DIR=$(MODEL_DIR) GRAFANA_PORT=$(GRAFANA_PORT) GRAFANA_ROOT_URL="$$root" \
	  $(BIN)/honcho -e /dev/null start -f $(PROCFILE) $$processes || [ $$? -eq 130 ]

serve:
	@scripts/bootstrap.sh runtime
	@$(BIN)/python -m model.train --if-missing --model-dir $(MODEL_DIR)
	MODEL_DIR=$(MODEL_DIR) $(BIN)/gunicorn -c webapp/gunicorn.conf.py webapp.wsgi:app

test:
	@scripts/bootstrap.sh dev
	$(BIN)/python -m pytest

model:
	@scripts/bootstrap.sh runtime
	$(BIN)/python -m model.train --model-dir $(MODEL_DIR)

bench:
	@scripts/bootstrap.sh dev
	@$(BIN)/python -m model.train --if-missing --model-dir $(MODEL_DIR)
	$(BIN)/python -m bench.bench_predict

# regenerate prometheus/rules/*.yml and grafana/dashboards/*.json from monitoring/config.py (every
# threshold and window, once), monitoring/rules.py and grafana/*.py; the tests check they match.
# One command writes both: the dashboards draw the alerts' thresholds, so they change together.
dashboards rules:
	@scripts/bootstrap.sh dev
	$(BIN)/python -m monitoring.build

clean:
	rm -rf $(VENV) model/model.pkl model/model_card.json .pytest_cache .hypothesis .run
