# The two commands a newcomer needs (see README):
#   make run    the whole stack, locally: API, exporter, Prometheus, Alertmanager (honcho + Procfile)
#   make test   run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= model

.PHONY: run serve test model bench dashboards clean

run:
	@scripts/bootstrap.sh stack
	@$(BIN)/python -m model.train --if-missing --model-dir $(MODEL_DIR)
	@mkdir -p .run
	@echo "API          http://127.0.0.1:5000  (try: curl -s localhost:5000/model)"
	@echo "API metrics  http://127.0.0.1:9200/metrics"
	@echo "Exporter     http://127.0.0.1:8000/metrics"
	@echo "Prometheus   http://127.0.0.1:9090/classic/graph  (alerts: http://127.0.0.1:9090/classic/alerts)"
	@echo "Alertmanager http://127.0.0.1:9093/api/v2/alerts  (its API; Debian's package has no web UI)"
	@echo "Logs: this terminal (honcho prefixes each line with its process). Ctrl-C stops everything."
	@# Ctrl-C ends honcho with status 130: that is the normal way to stop, not a failure
	@MODEL_DIR=$(MODEL_DIR) $(BIN)/honcho start -f Procfile || [ $$? -eq 130 ]

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

# regenerate grafana/dashboards/*.json from the Python in grafana/ (the tests check they match)
dashboards:
	@scripts/bootstrap.sh dev
	$(BIN)/python -m grafana.build

clean:
	rm -rf $(VENV) model/model.pkl model/model_card.json .pytest_cache .hypothesis .run
