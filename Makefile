# clipdex: `make setup`, `make demo`, `make test` work on a fresh clone (package registries only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup browser demo test lint model bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q retrieval ingest  # the .pyc files an installed package has: 0.09 s off every start
	touch $@

demo: setup
	$(BIN)/clipdex ingest samples/fashion-mnist --config configs/demo.toml
	@echo; echo '== text search: "a photo of a sneaker"'
	$(BIN)/clipdex search "a photo of a sneaker" --config configs/demo.toml --limit 5
	@echo; echo '== the same, minus the negative prompt "a photo of an ankle boot"'
	$(BIN)/clipdex search "a photo of a sneaker" --negative "a photo of an ankle boot" --negative-weight 1 --config configs/demo.toml --limit 5
	@echo; echo '== "a photo of a shirt", only below samples/fashion-mnist/t-shirt (a Qdrant payload filter)'
	$(BIN)/clipdex search "a photo of a shirt" --folder samples/fashion-mnist/t-shirt --config configs/demo.toml --limit 3
	@echo; echo '== image search: samples/fashion-mnist/ankle_boot/00000.png'
	$(BIN)/clipdex search --image samples/fashion-mnist/ankle_boot/00000.png --config configs/demo.toml --limit 5
	@echo; $(BIN)/clipdex status --config configs/demo.toml

# The web page is tested in a real browser: Debian's chromium and chromedriver (root installs them), and
# checked with axe-core from npm (into .cache/axe; tests/axe.py installs it too, and skips without npm).
AXE_VERSION := 4.14.1
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null; \
	else echo "note: install chromium and chromium-driver to run the browser test (skipped without them)"; fi
	@if [ -f .cache/axe/node_modules/axe-core/axe.min.js ]; then :; \
	elif command -v npm >/dev/null; then \
	  npm install --prefix .cache/axe --no-save --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION) >/dev/null; \
	else echo "note: install npm for the page's accessibility check (axe-core; skipped without it)"; fi

test: setup browser
	$(BIN)/ruff check retrieval ingest tests benchmarks
	$(BIN)/python -m pytest -q

# Rebuild clipdex's own model from scratch (Fashion-MNIST from Debian's dataset-fashion-mnist), then
# measure it on the full 10,000-image test split. See README, "Training and evaluation".
FMNIST := /usr/share/datasets/fashion-mnist
model: setup
	@test -d $(FMNIST) || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null; } || \
	  { echo "make model: install the Debian package dataset-fashion-mnist (or set train.data)"; exit 1; }
	$(BIN)/clipdex train --config configs/fmnist-tiny.toml
	$(BIN)/clipdex eval --config configs/fmnist-tiny.toml --json -o models/fmnist-tiny/eval.json

bench: setup
	$(BIN)/python benchmarks/ingest.py --json
	$(BIN)/python benchmarks/stores.py --points 10000,100000 --json
	$(BIN)/python benchmarks/serve.py --json
	$(BIN)/python benchmarks/query.py --json
	$(BIN)/python benchmarks/peers.py --json

lint: setup
	$(BIN)/ruff check retrieval ingest tests benchmarks

clean:
	rm -rf .demo-store demo-store .pytest_cache .ruff_cache
