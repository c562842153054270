# The two commands a newcomer needs (see README):
#   make run    bring the service up (venv, packages, model, gunicorn)
#   make test   run the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= model

.PHONY: run test model bench clean

run:
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

clean:
	rm -rf $(VENV) model/model.pkl model/model_card.json .pytest_cache .hypothesis
