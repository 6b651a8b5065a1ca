# The commands that matter: `make run` (the whole stack) and `make test` (the whole suite).
.PHONY: run test smoke contract services lint fmt bench chaos up migrate validate

run: ## Start Postgres/RabbitMQ if needed, a mail catcher, accounts and mailer
	scripts/run.sh

test: services ## The whole suite: Rust tests on real Postgres/RabbitMQ/SMTP, deploy/ validation, the OpenAPI contract under schemathesis, the make-run smoke test in Chromium
	command -v oathtool >/dev/null || scripts/install-packages.sh oathtool
	command -v npm >/dev/null || scripts/install-packages.sh nodejs npm
	[ tests/oidc/node_modules/.package-lock.json -nt tests/oidc/package-lock.json ] || npm ci --prefix tests/oidc --no-audit --no-fund
	cargo test --workspace --locked
	scripts/validate-deploy.sh
	scripts/schemathesis.sh
	scripts/smoke.sh

contract: services ## schemathesis over every operation of accounts' /openapi.json, authenticated, every check (installs a pinned schemathesis into var/venv)
	scripts/schemathesis.sh

smoke: services ## Only the headless make-run smoke test (installs chromium and playwright-core when missing)
	scripts/smoke.sh

validate: ## Validate docker-compose.yml and deploy/k8s offline
	scripts/validate-deploy.sh

services: ## Make sure PostgreSQL and RabbitMQ answer (installs/starts them on Debian)
	scripts/services.sh

lint: ## Formatting and clippy, as CI wants them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

migrate: services ## Create the databases and apply migrations, without serving
	cargo run -q -p accounts -- migrate
	cargo run -q -p mailer -- migrate

bench: services ## Benchmarks against issue 14's targets (release builds, wrk, pgbench); writes bench/results/<date>.{json,svg} and README's Performance section
	command -v wrk >/dev/null || scripts/install-packages.sh wrk
	pgbench --version >/dev/null 2>&1 || scripts/install-packages.sh postgresql-contrib
	test -x var/venv/bin/python || python3 -m venv var/venv
	var/venv/bin/pip install -q --disable-pip-version-check 'aiosmtpd==1.4.*'
	cd scripts && ../var/venv/bin/python bench.py

chaos: services ## Failure scenarios (some stop and restart the local RabbitMQ and PostgreSQL); PASS/FAIL each
	mkdir -p var/bench
	test -x var/venv/bin/python || python3 -m venv var/venv
	var/venv/bin/pip install -q --disable-pip-version-check 'aiosmtpd==1.4.*' 'pika==1.3.*'
	cd scripts && ../var/venv/bin/python chaos.py $(SCENARIOS)

up: ## The stack in Docker (needs a Docker engine)
	docker compose up --build
