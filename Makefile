GO    ?= go
BIN   := bin/mrcluster
PKGS  := ./...

.PHONY: build web run test bench chaos fmt-check vet clean

# The dashboard (web/) is built into internal/webui/ui/app, which the
# binary embeds; a Go build without it serves a page saying how to build it.
build: web
	$(GO) build -o $(BIN) ./cmd/mrcluster

web: web/node_modules/.installed
	cd web && npm run build

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# make run ADDR=0.0.0.0:8080 serves on another address (as MRCLUSTER_ADDR
# or --addr do); ARGS passes any other flags of serve.
run: build
	$(BIN) serve $(if $(ADDR),--addr $(ADDR)) $(ARGS)

# Everything CI runs: the tests, then each fuzz target briefly.
# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator may
# report "context deadline exceeded" as a failure at the deadline (go.dev/issue/75804).
FUZZTIME ?= 30000x
# GORACE: a race-built binary sleeps a second at its exit otherwise (each
# package's test binary, each command a test runs); races are reported as
# they happen all the same.
test: fmt-check vet web
	cd web && npx vitest run
	GORACE=atexit_sleep_ms=0 GO=$(GO) .ci/gotest -race -count=1 -timeout 25m $(PKGS)
	$(GO) test -run '^$$' -fuzz '^FuzzSubmitBody$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzSeedPath$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzSplitReader$$' -fuzztime $(FUZZTIME) ./internal/dataset
	$(GO) test -run '^$$' -fuzz '^FuzzSkimHead$$' -fuzztime $(FUZZTIME) ./internal/view

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Benchmarks print a table: the cluster's figures beside the raw JetStream
# ceiling measured in the same run.
bench:
	$(GO) run ./internal/bench/cmd

# Minutes of faults against a cluster of three servers (SIGKILLed servers and
# workers, paused workers, a full disk as root): every acknowledged job must
# end correctly, no task run twice without a recorded reason, nothing left
# running. make test runs the same test for 40 s. CHAOS_FAULTS=disk: only
# server 0's disk filled and server 0 killed, in turn. A failed run's data
# directories are copied into $MRCLUSTER_CHAOS_KEEP when it is set.
CHAOS_DURATION ?= 5m
CHAOS_FAULTS ?=
chaos:
	MRCLUSTER_CHAOS_DURATION=$(CHAOS_DURATION) MRCLUSTER_CHAOS_FAULTS=$(CHAOS_FAULTS) $(GO) test -race -count=1 -timeout 30m -run '^TestChaos$$' -v ./cmd/mrcluster

clean:
	rm -rf bin mrcluster-data internal/webui/ui/app web/node_modules
