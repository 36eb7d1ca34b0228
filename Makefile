# Build, test and run the confidential service mesh. Only Go is needed.
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/marblemesh/marblemesh/internal/version.Version=$(VERSION) \
             -X github.com/marblemesh/marblemesh/internal/version.Commit=$(COMMIT)
export CGO_ENABLED ?= 0

CMDS := $(notdir $(wildcard cmd/*))

.PHONY: all build demo test test-short lint vet fmt-check kube-bins bench fuzz generate clean $(CMDS)

# golangci-lint is pinned in the separate module hack/tools (its go.mod and go.sum), so the
# project's own go.mod gains no dependencies. It is built once into $(BIN), under a name that
# carries the version, and rebuilt when the pin changes.
GOLANGCI_LINT_VERSION := $(shell awk '$$1 == "github.com/golangci/golangci-lint/v2" { print $$2 }' hack/tools/go.mod)
GOLANGCI_LINT         := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

all: build

build: $(CMDS)

$(CMDS):
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$@ ./cmd/$@

## demo: Coordinator in simulation, sample manifest, two marbles talking mTLS.
demo:
	$(GO) run ./hack/demo

## test: everything CI runs: formatting, vet, golangci-lint, the Kubernetes test binaries, and all tests with the race detector.
test: fmt-check vet lint kube-bins
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./...

## test-short: the tests that need no Kubernetes API server, without the race detector.
test-short:
	$(GO) test -short -count=1 ./...

## kube-bins: build etcd and the Kubernetes control plane for tests (first run only, ~12 min on 2 cores; cached after).
kube-bins:
	$(GO) run ./hack/kube/build

vet:
	$(GO) vet ./...

## lint: golangci-lint with .golangci.yml (the first run builds the pinned version, a few minutes on 2 cores).
lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT): hack/tools/go.mod hack/tools/go.sum
	@[ -n "$(GOLANGCI_LINT_VERSION)" ] || { echo "no golangci-lint version in hack/tools/go.mod"; exit 1; }
	@mkdir -p $(dir $@)
	cd hack/tools && $(GO) build -o $(abspath $@) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: measure and write docs/benchmarks.md (the previous file is kept as docs/benchmarks.previous.md).
bench: kube-bins
	@mkdir -p docs
	@[ ! -f docs/benchmarks.md ] || cp docs/benchmarks.md docs/benchmarks.previous.md
	@{ echo "# Benchmarks"; echo; \
	   echo "Measured $$(date -u '+%Y-%m-%d %H:%M UTC') on $$(nproc) cores ($$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $$(awk '/MemTotal/ {printf "%.0f GiB", $$2/1048576}' /proc/meminfo), $$($(GO) version | cut -d' ' -f3), load average before the run: $$(cut -d' ' -f1-3 /proc/loadavg)."; \
	   echo "The load generators run on the same machine."; echo; \
	   echo "## Coordinator"; echo; $(GO) run ./hack/bench/coordinator; \
	   $(GO) run ./hack/bench/coordinator -ha; \
	   echo "## marble-injector"; echo; echo "The hand-written AdmissionReview decoder and the library decoder that replaced it are compared in injector-decoding.md."; echo; $(GO) run ./hack/bench/injector; \
	   echo "## SGX quote verification"; echo; echo "One goroutine, $(GO) test -run '^\$$' -bench Verify -benchmem ./attestation/sgx/. Cached: the verifier checked the collateral and the PCK chain before, as in a running Coordinator; each quote still gets its QE report, attestation-key binding and quote signatures checked and its TCB evaluated. Cold: a new verifier per quote, everything checked. Phala is the recorded real quote (absent without ../shared/attestation-fixtures), Synthetic a quote of the test PKI. Target: at most 1 ms per quote with collateral cached."; echo; echo "| benchmark | ms/quote | bytes/quote | allocations/quote |"; echo "|---|---:|---:|---:|"; $(GO) test -run '^$$' -bench Verify -benchmem ./attestation/sgx/ | awk '$$1 ~ /^Benchmark/ && $$4 == "ns/op" { sub(/-[0-9]+$$/, "", $$1); printf "| %s | %.3f | %s | %s |\n", $$1, $$3 / 1e6, $$5, $$7 }'; echo; \
	   echo "## Kubernetes: install to ready"; echo; echo "$(GO) test -run '^\$$' -bench InstallToReady -benchtime 5x ./test/e2e: \`marblerun install --simulation\` until \`marblerun check\` reports the Coordinator and the injector ready, on the local kube-apiserver, controller manager and scheduler, with the test node agent running the Pods (probes every 250 ms, initial delays honoured). Uninstall between runs, untimed. Target: under 15 s."; echo; echo "| runs | install command s | install to ready s |"; echo "|---:|---:|---:|"; $(GO) test -run '^$$' -bench InstallToReady -benchtime 5x ./test/e2e 2>/dev/null | awk '/ s\/ready/ { for (i = 2; i < NF; i++) { if ($$(i+1) == "ns/op") runs = $$(i-1); if ($$(i+1) == "s/install") inst = $$i; if ($$(i+1) == "s/ready") ready = $$i }; printf "| %s | %.2f | %.2f |\n", runs, inst, ready }'; echo; \
	 } > docs/benchmarks.md.tmp && mv docs/benchmarks.md.tmp docs/benchmarks.md
	@cat docs/benchmarks.md

## fuzz: a short fuzzing pass over every parser (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$spec/*_test.go | sed 's/^func //'); do \
	    echo "== $$spec $$f"; $(GO) test $$spec -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

## generate: regenerate rpc/ from rpc.proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
generate:
	cd rpc && protoc --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative rpc.proto

clean:
	rm -rf $(BIN)
