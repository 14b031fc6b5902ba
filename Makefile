# The two commands of the README's quick start:
#   make demo   run the demo on the embedded StubBroker + StubBackend
#   make test   install everything (the benchmarks' peers too: the suite runs every quick row),
#               then lint, type-check and run the whole suite
# Both need only Python 3.10+ and make: no Redis, no RabbitMQ required.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test venv check-python lint typecheck pytest bench clean

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "dramatiq-resilience needs Python 3.10 or newer; set PYTHON=python3.x")'

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python

demo: venv
	$(BIN)/python -m pip install -q -e .
	$(BIN)/dramatiq-resilience demo

test: venv
	$(BIN)/python -m pip install -q -e '.[test,dev,rabbitmq]' -r benchmarks/requirements.txt
	$(MAKE) --no-print-directory lint typecheck pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m pip install -q -e '.[test,dev,rabbitmq]' -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
