# One command runner for people and CI (the README's two commands call these targets).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv build test lint rust-test py-test run bench bench-10m clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

## build: compile the extension (release) and install reach with its dev tools into .venv
build: venv
	$(BIN)/pip install -q -e '.[dev]'

## test: everything CI checks (Rust tests and lints, Python lints, types, pytest)
test: build rust-test lint py-test

rust-test:
	cargo fmt --check
	cargo clippy --all-targets --no-default-features -- -D warnings
	cargo clippy --all-targets -- -D warnings
	cargo test --no-default-features

lint: build
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest reach._core --allowlist python/reach/stubtest-allowlist.txt

py-test: build
	$(BIN)/pytest -q

## run: the main job: the JPush v3 emulator with demo devices (Ctrl-C stops it)
run: build
	$(BIN)/reach serve --demo 200000

bench: build
	$(BIN)/pytest benches --benchmark-enable --benchmark-only -q

bench-10m: build
	$(BIN)/python benches/side_by_side.py --devices 10000000

clean:
	rm -rf $(VENV) target
