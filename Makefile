# Two commands do all set-up on a fresh machine:
#   make demo   — create the venv, install everything, make a film on the cpu profile
#   make test   — create the venv, install everything, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IDEA   ?= Two friends on a neon rooftop reconcile before sunrise.

.PHONY: setup test demo schemas clean bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

demo: $(STAMP)
	$(BIN)/sparkle-motion make "$(IDEA)" -o film.mp4

schemas: $(STAMP)
	$(BIN)/sparkle-motion schemas export

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .sparkle .pytest_cache
