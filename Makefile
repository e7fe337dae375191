# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv, install the project into it and fetch the face-detector model.
VENV   := .venv
BIN    := $(VENV)/bin
PYTHON ?= python3
# What is installed beside the gate: the set-up commands need the test tools; the
# computer at a door needs none of them (`make install EXTRAS=`, see README).
EXTRAS ?= test
STAMP  := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

.PHONY: demo test install models chromium faketime

demo: models
	$(BIN)/gate demo

test: models chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	$(BIN)/python -m pip check
	touch $@

models: install
	$(BIN)/gate models fetch

# Debian's chromium for the browser tests; Playwright never downloads a browser here.
# espeak-ng: the kiosk's spoken prompts are regenerated in a test (`gate kiosk sounds`).
chromium:
	@command -v chromium >/dev/null && command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium espeak-ng >/dev/null; }

# libfaketime: `gate soak` steps the gate's wall clock with it (`make faketime` before a soak).
faketime:
	@command -v faketime >/dev/null || { apt-get update -qq && apt-get install -y -qq faketime >/dev/null; }
