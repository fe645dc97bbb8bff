# The project's commands. `make test` is what CI runs on a fresh clone.
SHELL := /bin/bash

.PHONY: tools test lint unit tables set-aside streams streams-unit

tools:
	@./scripts/install-tools.sh

## Everything: lints, the template check, unit tests and the DynamoDB Local suites.
test: tools lint streams-unit
	cargo test --workspace

lint: tools
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cfn-lint template.yaml
	@./scripts/check-asl.sh

## Unit tests only (no DynamoDB Local): the library's and the flow engine's (flow/).
unit:
	cargo test --workspace --lib --bins

## Create both tables (idempotent) at the endpoint the environment names, e.g.
## AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 AWS_REGION=us-east-1 make tables
tables:
	cargo run --quiet -p kv-dev --bin kv-tables

## The stream records the consumers set aside (a copy its target refuses, an event EventBridge
## refuses, an unreadable record), oldest first, as JSON lines; the environment of `make tables`.
set-aside:
	cargo run --quiet -p kv-dev --bin kv-set-aside

## Lambda's part locally: polls the streams of template.yaml's DynamoDB event sources and fires
## its schedules, invoking the functions through the Invoke API, until Ctrl-C. The environment
## of `make tables` plus the Invoke API's address, e.g. (with `cargo lambda watch` on 9000)
## AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 AWS_REGION=us-east-1 \
##   AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9000 make streams
streams:
	@python3 scripts/streams.py

## The runner's own unit tests (filters, batching, retries, bisection, shards, schedules).
streams-unit:
	python3 -m unittest discover -s scripts -p 'test_*.py'

.PHONY: run local asl sam-validate
## The quick start: DynamoDB Local in memory, the tables, every function under
## `cargo lambda watch`, then the three example flows played step by step through the Lambda
## Invoke API. Everything it started is stopped at the end, on Ctrl-C and on failure.
run: tools
	@python3 scripts/run-local.py demo

## The same stack, left running in the foreground for your own calls (it prints how).
local: tools
	@python3 scripts/run-local.py serve

## Validate every statemachines/*.asl.json with asl-validator (pinned, installed into .tools).
asl:
	@./scripts/check-asl.sh

## Optional: SAM CLI's own validation; installs aws-sam-cli into .tools/sam-venv on first use.
sam-validate:
	@test -x .tools/sam-venv/bin/sam || (python3 -m venv .tools/sam-venv && .tools/sam-venv/bin/pip install --quiet aws-sam-cli)
	SAM_CLI_TELEMETRY=0 .tools/sam-venv/bin/sam validate --lint --region us-east-1

.PHONY: bench
## Performance: builds the release binaries, then prints requests, capacity units, latency
## (against the raw SDK call), cold starts and binary sizes, and writes target/bench.json.
## Starts its own DynamoDB Local; takes a few minutes. Not part of `make test`.
bench: tools
	cargo build --release --bins
	cargo build --release -p kv-dev --bin kv-bench
	./target/release/kv-bench
