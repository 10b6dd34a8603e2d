# kube2redis: `make run` runs the pipeline, `make test` passes the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run stop test test-unit check lint typecheck localcluster venv bench bench-quick bench-profile clean toxiproxy chaos helm chart dashboard

run: venv localcluster ## mirror a cluster into Redis (local control plane if none is configured)
	@bash deploy/run-local.sh

stop: ## stop what `make run` started
	@bash deploy/run-local.sh stop

test: venv localcluster toxiproxy helm ## the whole suite against real Redis and a real API server
	$(BIN)/pytest -q

# Tiers (markers set by tests/conftest.py): `kube` needs an API server, `redis` only a
# redis-server, both are `integration`; `pytest -m "not integration"`: neither (seconds).
test-unit: venv ## everything but the API-server tests: fakes, property tests, Redis-only logic (about a minute)
	$(BIN)/pytest -q -m "not kube"

check: lint lint-deploy typecheck chart ## what to run before every commit

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# What git knows of (tracked, or new and not ignored) and is still on disk.
LINT_SHELL = $(wildcard $(shell git ls-files --cached --others --exclude-standard '*.sh')) .ci/run
LINT_YAML = $(wildcard $(shell git ls-files --cached --others --exclude-standard '*.yaml' '*.yml'))

.PHONY: lint-deploy
lint-deploy: venv ## shell scripts, YAML, the Dockerfile and the compose file (apt: shellcheck yamllint)
	@command -v shellcheck >/dev/null && command -v yamllint >/dev/null \
		|| { echo "lint-deploy: needs shellcheck and yamllint (apt-get install shellcheck yamllint)" >&2; exit 1; }
	shellcheck $(LINT_SHELL)
	yamllint -c .yamllint.yaml --strict $(LINT_YAML)
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy deploy/grafana

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $(STAMP)

localcluster: ## build etcd, kube-apiserver, kube-controller-manager, kubectl from Go modules
	@bash deploy/localcluster/build.sh

bench: venv localcluster ## every benchmark scenario; writes bench/results and bench/RESULTS.md
	$(BIN)/python -m bench.run --full

bench-quick: venv localcluster ## a smaller run of every scenario, about 9 minutes
	$(BIN)/python -m bench.run --quick

bench-profile: venv localcluster ## py-spy profiles of the watcher and projector under a burst
	$(BIN)/python -m bench.profile

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

TOXIPROXY := $(HOME)/.cache/kube2redis/toxiproxy
DURATION ?= 180
SEED ?=

toxiproxy: ## toxiproxy's server, built from the Go module proxy (chaos network faults)
	@test -x $(TOXIPROXY)/server || GOBIN=$(TOXIPROXY) go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0

chaos: venv localcluster toxiproxy ## seeded faults under load, then the history checks (DURATION=3600 for a soak)
	$(BIN)/python -m chaos --duration $(DURATION) $(if $(SEED),--seed $(SEED))

HELM_VERSION := v3.22.0
HELM := $(HOME)/.cache/kube2redis/helm/$(HELM_VERSION)/helm
# The chart's tests find the helm this Makefile built.
export KUBE2REDIS_HELM := $(HELM)
CHART := deploy/helm/kube2redis

helm: ## helm, built from its Go module (the chart's checks and its install test)
	@test -x $(HELM) || GOBIN=$(dir $(HELM)) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

chart: venv helm ## helm lint + template, promtool check + test of the alerts, dashboard up to date
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set redis.bundled.enabled=true,verify.enabled=true \
	  --set monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true \
	  --set monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true
	$(HELM) lint --strict $(CHART) --set sharding.enabled=true,monitoring.podMonitor.enabled=true \
	  --set monitoring.serviceMonitor.enabled=true
	$(HELM) template kube2redis $(CHART) --namespace kube2redis >/dev/null
	promtool check rules $(CHART)/files/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts-test.yaml
	$(BIN)/python -m deploy.grafana.dashboard --check

dashboard: venv ## write the Grafana dashboard's JSON from deploy/grafana/dashboard.py
	$(BIN)/python -m deploy.grafana.dashboard
