# aerialdet: `make demo` (set up + run the main job on synthetic scenes), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo_out
# torch/torchvision are pinned here (not in pyproject.toml, which keeps ranges
# users elsewhere can satisfy): these two builds lie on this machine's disk.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-all bench lint clean

# the review page's OpenLayers, from the npm registry (never a CDN, never committed)
OL := .web/node_modules/ol/dist/ol.js

install: $(VENV)/.installed $(OL)

$(OL):
	npm install --no-save --no-audit --no-fund --prefix .web ol@10.11.0

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e . --group test
	touch $@

# Train a small model on synthetic scenes, detect on held-out scenes, evaluate,
# and draw a quicklook. About 5 minutes on 2 idle CPU cores.
demo: install
	@echo "== synth: 6 training scenes, 2 held-out scenes"
	@$(BIN)/aerialdet synth $(DEMO)/train --scenes 6 --size-px 1024 --seed 1
	@$(BIN)/aerialdet synth $(DEMO)/heldout --scenes 2 --size-px 2048 --seed 7
	@echo "== train (ResNet-18 RetinaNet, Ray Train)"
	@$(BIN)/aerialdet train $(DEMO)/train/labels.parquet --out $(DEMO)/model --steps 300 \
		--backbone resnet18 --tile-size-px 256 --overwrite
	@echo "== detect on the held-out scenes"
	@$(BIN)/aerialdet detect $(DEMO)/heldout --model $(DEMO)/model --out $(DEMO)/detections --overwrite
	@echo "== evaluate, query, quicklook"
	@$(BIN)/aerialdet evaluate $(DEMO)/detections $(DEMO)/heldout/labels.parquet --model $(DEMO)/model
	@$(BIN)/aerialdet query $(DEMO)/detections --label vehicle --min-score 0.5 --limit 5
	@$(BIN)/aerialdet quicklook $(DEMO)/detections --scene scene_000.tif -o $(DEMO)/quicklook.png

# lint first (ruff, then mypy strict over the three packages: pyproject's [tool.mypy]), then the suite
test: install lint
	$(BIN)/python -m pytest -q

# the slow tests as well (bf16 vs fp32 AP50 on a model trained in the test, ~7 min)
test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: install
	$(BIN)/python bench/merge_duplicates.py
	$(BIN)/python bench/query_pruning.py
	$(BIN)/python -m bench.throughput --size-px 4096
	$(BIN)/python -m bench.memory --sizes 4096,16384

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline retinanet jobs

clean:
	rm -rf $(DEMO) .pytest_cache
