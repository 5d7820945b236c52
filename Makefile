# Selextract — the commands a newcomer needs:
#   make up     set everything up (idempotent) and deploy the local stack on this Docker engine
#   make test   every test (what CI runs)
SHELL := /bin/bash
STACK ?= local
export SELEXTRACT_CACHE ?= $(HOME)/.cache/selextract

.PHONY: preview-stacks setup up down preview outputs test test-unit lint duplicates images services services-stop bench

setup:            ## venv, Docker engine, Pulumi toolchain, S3 server, service images
	@scripts/setup.sh

up: setup         ## pulumi up --stack $(STACK) on the local Docker engine
	@scripts/up.sh $(STACK)

down:             ## pulumi destroy --stack $(STACK)
	@scripts/up.sh --destroy $(STACK)

preview:          ## pulumi preview --stack $(STACK) (diff only)
	@scripts/up.sh --preview $(STACK)

preview-stacks:   ## pulumi preview (with the policy pack) of phase1-4, offline; diffs in artifacts/
	@scripts/preview-stacks.sh

test: setup       ## every test: unit, mocks, rendered configs, service, end to end
	@scripts/test.sh

test-unit:        ## the fast tests that need no services or Docker
	@.venv/bin/pytest -q tests/infra tests/policies tests/preview tests/worker -m "not e2e"

lint:
	@.venv/bin/ruff check . && .venv/bin/ruff format --check infra stacks tests/infra

images:           ## (re)build the registry-less service images
	@scripts/build-images.sh

services:         ## start Postgres/Redis/S3/test site on 127.0.0.1 for the service tests
	@scripts/services.sh start

services-stop:
	@scripts/services.sh stop

bench: setup      ## benchmarks vs Scrapy / a bare FastAPI app / fleet sizes (not part of `make test`); BENCH_ARGS=--quick
	@bench/run.sh $(BENCH_ARGS)
