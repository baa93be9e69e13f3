# Two entry points for a fresh machine: `make serve` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
EDITABLE := $(VENV)/.editable
DATA   ?= data
PORT   ?= 50051
METRICS_PORT ?= 9100
WORKERS ?= 1
PACKAGES := contract protos server kernels training clients loadtests

.PHONY: serve test test-at build protos lint demo-bundle clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	rm -f $(VENV)/.installed-*
	touch $@

# An editable install so `python -m server` works anywhere, once per venv and pyproject/setup.py:
# it compiles every kernel in a fresh temporary build dir, whatever is up to date, so run by
# each `make serve` it took 76 s of CPU (162 s on a busy 2-core box) before the server started.
# It copies the kernels it builds next to their .pyx, as build_ext --inplace does.
$(EDITABLE): $(STAMP) pyproject.toml setup.py
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The Cython kernels changed since (build_ext --inplace skips those up to date). The gRPC stubs
# are committed and only `make protos` rewrites them: tests/test_protos_fresh.py then compares
# protoc's output with the committed stubs, which a regeneration here would make pointless.
# Then the project's bytecode: pip compiles what it installs, but an editable install's sources
# are compiled at first import, and not written where PYTHONDONTWRITEBYTECODE is set (as on our
# machines), so every process (a server, each writer child, a CLI call) compiled them again:
# ~0.3 s of CPU a `python -m server`. Python checks each .pyc against its source's time stamp.
build: $(EDITABLE)
	$(BIN)/python setup.py -q build_ext --inplace
	$(BIN)/python -m compileall -q $(PACKAGES)

# Trains the demo bundle from the project's own demo data unless the data dir already has one.
demo-bundle: build
	$(BIN)/python -m training bootstrap --data-dir $(DATA)

serve: demo-bundle
	$(BIN)/python -m server --host 127.0.0.1 --port $(PORT) --data-dir $(DATA) \
		--workers $(WORKERS) --metrics-port $(METRICS_PORT)

# After editing protos/tailor/v1/*.proto: regenerate the stubs, then commit them with the .proto.
protos: $(STAMP)
	$(BIN)/python setup.py -q build_protos

# ruff over the Python (config in pyproject [tool.ruff]), cython-lint over the kernels.
lint: $(STAMP)
	$(BIN)/ruff check .
	PATH="$(BIN):$$PATH" cython-lint kernels/*.pyx kernels/*.pxd

# Two test processes, one per core, each taking whole files (module fixtures, such as a shared
# server, are set up once): most tests wait on servers and subprocesses starting.
SUITE = $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

test: build lint
	$(SUITE)

# The suite with every process's clock shifted so that it starts at AT (UTC), to find tests and
# code that depend on the date: `make test-at AT="2027-03-28 00:57:30"` (a DST change, a year's
# end, a leap day). Needs Debian's `faketime`; not part of `make test` or CI. The monotonic clock
# is shifted too: with it left alone, libfaketime 0.9.10 makes Python's time.sleep fail (EINVAL).
test-at: build lint
	@test -n "$(AT)" || { echo 'AT="YYYY-MM-DD HH:MM:SS" (UTC) is required'; exit 2; }
	off=$$(( $$(date -u -d "$(AT)" +%s) - $$(date -u +%s) )); \
	FAKETIME_DONT_FAKE_MONOTONIC=0 faketime -f "$$([ $$off -ge 0 ] && echo +)$${off}s" $(SUITE)

clean:
	rm -rf build kernels/*.so kernels/*.c *.egg-info
