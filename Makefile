# Two commands do all set-up on a fresh machine:
#   make demo   — create the venv, install the cpu profile, make a film (film.mp4)
#   make test   — create the venv, install everything the tests need, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.installed-core
FULL   := $(VENV)/.installed-full
IDEA   ?= Two friends on a neon rooftop reconcile before sunrise.
FILM   ?= film.mp4

.PHONY: setup test demo schemas bench clean

$(CORE): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh "$(PYTHON)" "$(VENV)" core
	touch $(CORE)

$(FULL): pyproject.toml scripts/setup.sh $(wildcard scripts/install_chatterbox.sh)
	bash scripts/setup.sh "$(PYTHON)" "$(VENV)" full
	touch $(FULL) $(CORE)

setup: $(FULL)

test: $(FULL)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# The mesh is stopped afterwards whatever happened; `sparkle-motion up` keeps one running.
demo: $(CORE)
	$(BIN)/sparkle-motion make "$(IDEA)" -o "$(FILM)"; status=$$?; $(BIN)/sparkle-motion down; exit $$status

schemas: $(CORE)
	$(BIN)/sparkle-motion schemas export

bench: $(FULL)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .sparkle .pytest_cache
