# The two commands of SMLT: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
APT_PACKAGES := redis-server redis-tools libhiredis-dev liblz4-dev lz4 pkg-config python3 python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PIDDIR := $(CURDIR)/.build/test-pids
PYVENV := $(CURDIR)/.build/pyvenv

.PHONY: demo demo-cluster test lint python-test pyvenv deps build release clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@# redis-server's package may start a system service on 6379; SMLT never uses it.
	@command -v swift >/dev/null || { echo "Swift 6.1 or later is required (https://swift.org/install)"; exit 1; }

build: deps
	swift build

release: deps
	swift build -c release

demo: build
	.build/debug/smlt train --dataset digits --model softmax --workers 4 --shards 2 --chunk-elements 128 --show-shards

# The same training on a local 3-master / 3-replica Redis Cluster, through a master's failover
# and a rebalance onto a new node (ops/demo-cluster.sh stops everything it starts).
demo-cluster: build
	ops/demo-cluster.sh

# Tests start and stop their own redis-server processes on free loopback ports. Each writes a
# pid file under $(PIDDIR); anything a crashed test left behind is stopped afterwards.
# The Python client's tests (python/tests) run after the Swift tests, in a venv; either failing
# fails `make test`. The Swift sources must pass `swift format lint` (.swift-format) first.
test: build pyvenv lint
	@rm -rf $(PIDDIR); mkdir -p $(PIDDIR)
	@status=0; SMLT_TEST_PIDDIR=$(PIDDIR) SMLT_BIN=$(CURDIR)/.build/debug/smlt swift test || status=$$?; \
	SMLT_TEST_PIDDIR=$(PIDDIR) SMLT_BIN=$(CURDIR)/.build/debug/smlt $(PYVENV)/bin/python -m pytest -q python/tests || status=$$?; \
	for f in $(PIDDIR)/*.pid; do [ -f "$$f" ] && kill "$$(cat $$f)" 2>/dev/null; done; \
	rm -rf $(PIDDIR); exit $$status

# The committed .swift-format, as a check (`swift format --in-place -r ...` fixes most findings).
lint:
	swift format lint --strict -r Sources Tests bench Examples Package.swift

# Only the Python client's tests (needs the smlt binary: `make build`).
python-test: build pyvenv
	@rm -rf $(PIDDIR); mkdir -p $(PIDDIR)
	@status=0; SMLT_TEST_PIDDIR=$(PIDDIR) SMLT_BIN=$(CURDIR)/.build/debug/smlt $(PYVENV)/bin/python -m pytest -q python/tests || status=$$?; \
	for f in $(PIDDIR)/*.pid; do [ -f "$$f" ] && kill "$$(cat $$f)" 2>/dev/null; done; \
	rm -rf $(PIDDIR); exit $$status

# A venv with the Python client and pytest (reinstalled each time, so it tracks python/).
pyvenv: deps
	@[ -x $(PYVENV)/bin/python ] || python3 -m venv $(PYVENV)
	$(PYVENV)/bin/pip install -q --disable-pip-version-check './python[test]'

clean:
	rm -rf .build
