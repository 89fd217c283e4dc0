# Common commands. The README's two newcomer commands are `make demo` and `make test`.
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help setup test lint unit e2e faults bench model experiments budget budget-agents demo tools manifests clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: ## the local demo: control plane + Prometheus + operator + flash-crowd load; ARGS="--trace FILE" etc.
	scripts/setup.sh
	$(VENV)/bin/rlscale demo $(ARGS)

.PHONY: calibrate
calibrate: ## measure the real demo service over a grid and fit the simulator to it (docs/simulator.md; ~20 min, root); ARGS="--measure 45" etc.
	scripts/setup.sh
	$(VENV)/bin/rlscale calibrate $(ARGS)

.PHONY: real-ranking
real-ranking: ## the HPA and the learned policy on real pods vs the simulator's ranking of them (docs/simulator.md; ~50 min, root)
	scripts/setup.sh
	$(VENV)/bin/rlscale real-ranking $(ARGS)

setup: ## install system packages, the virtualenv and the Go-built tools (idempotent)
	scripts/setup.sh

test: ## the full test command: installs what is missing, lints, runs every tier
	scripts/test.sh

lint: ## ruff, mypy (strict for policy/), import contracts, shellcheck
	scripts/lint.sh

unit: ## fast tests only (no Prometheus, Helm or control plane)
	$(VENV)/bin/pytest -m "not e2e and not slow and not faults" -x -q

e2e: ## the end-to-end tier on the local control plane
	RLSCALE_TOOLS_BIN=$$(tools/build-tools.sh | tail -n 1) $(VENV)/bin/pytest -m e2e

faults: ## the fault suite (tests/faults): API server/etcd/Prometheus/operator faults, sabotaged models
	RLSCALE_TOOLS_BIN=$$(tools/build-tools.sh | tail -n 1) $(VENV)/bin/pytest -m faults tests/faults

soak: ## the fault suite's soak: 100 policies, 5 s interval, 60 min, real Prometheus; exits 1 on a leak (ARGS="--duration 600")
	RLSCALE_TOOLS_BIN=$$(tools/build-tools.sh | tail -n 1) $(PY) bench/operator_scale.py --soak $(ARGS)

bench: ## benchmarks (print numbers; no assertions)
	$(PY) bench/decide_latency.py
	$(PY) bench/sim_throughput.py

manifests: ## regenerate the CRD, its chart copy, the RBAC rules and deploy/ from their sources
	$(VENV)/bin/rlscale crd --write
	$(PY) scripts/sync-manifests.py

model: ## train the default policy from scratch (default config and seed) and write the shipped ONNX model
	$(VENV)/bin/rlscale train --config default --out policy/models/default.onnx

experiments: ## re-run the papers' experiments (docs/experiments.md): tables, JSON and PNGs in runs/experiments/
	mkdir -p runs/experiments
	for e in five-levels orchestration grpo actor-critic-alibaba; do \
	  $(VENV)/bin/rlscale reproduce $$e --json --plot runs/experiments/$$e.png > runs/experiments/$$e.json || exit 1; \
	done

budget: ## several services in one capacity budget (docs/budget.md): pairs and triples of traces, 3 seeds, in runs/budget/
	scripts/budget-study.sh

budget-agents: ## train the coordinated agents (3 seeds x 10 min) and evaluate each as `make budget` does (~1 h)
	mkdir -p runs/budget
	for s in 0 1 2; do \
	  $(VENV)/bin/rlscale train-budget --trace nasa_http_1995-07-09_7d_1min.csv \
	    --trace worldcup98_1998-06-24_7d_1min.csv --trace alibaba2018_cluster_cpu_day3-8_1min.csv \
	    --budget-cores 24 --minutes 10 --seed $$s --out runs/budget/coordinated-s$$s.onnx || exit 1; \
	  COORDINATED_MODEL=runs/budget/coordinated-s$$s.onnx scripts/budget-study.sh runs/budget/trained-s$$s || exit 1; \
	done

tools: ## build the Go tools (kube-apiserver & co., etcd, kwok, helm, kindcheck) into the cache
	tools/build-tools.sh

clean: ## remove build outputs and caches in the repo
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
