# dabba's build. `make` builds bin/dabba and bin/dabba-fs.
GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
BIN      := bin
# Go test timeout for the whole suite; CI gives 90 minutes, we stay far inside.
TEST_TIMEOUT ?= 15m

.PHONY: all build deps test test-unit test-race demo bench bench-deps fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/dabba ./cmd/dabba
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/dabba-fs ./cmd/dabba-fs

# As root: Debian packages, device permissions, the unprivileged test user.
deps:
	./scripts/deps.sh

# Every test: unit tests and the integration tests that run the real binaries
# as the unprivileged test user. Run `make deps` first (as root).
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Only what needs no root, FUSE or network.
test-unit:
	DABBA_UNIT_ONLY=1 $(GO) test -count=1 -short ./...

test-race:
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) ./...

# The offline tour: a registry on 127.0.0.1 serving busybox, a pull, rootless runs.
demo: build
	./scripts/demo.sh

# As root: rootless podman, skopeo and runc configured for the test user.
bench-deps:
	./scripts/bench-deps.sh

# As root: the benchmark (bench/README.md). QUICK=1: small images, 3 repetitions,
# under 3 minutes. BENCHFLAGS passes more flags, e.g. BENCHFLAGS="--profile loopback".
bench:
	$(GO) run ./bench $(if $(QUICK),--quick) $(BENCHFLAGS)

fuzz:
	$(GO) test ./layers -run '^$$' -fuzz FuzzIndexLayer -fuzztime 30s
	$(GO) test ./layers -run '^$$' -fuzz FuzzMerge -fuzztime 30s
	$(GO) test ./layers/remote -run '^$$' -fuzz FuzzUnmarshalTOC -fuzztime 30s

clean:
	rm -rf $(BIN)
