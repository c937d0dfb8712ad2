# Convenience targets; the scripts are the source of truth.
.PHONY: build up test vet bench-api cluster-up cluster-down cluster-status

build:
	go build -o bin/ultracloud ./cmd/ultracloud

up:
	./scripts/quickstart.sh

test:
	./scripts/test.sh

# gofmt -l exits 0 even when it lists files: fail on any output.
vet:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "files need gofmt:"; echo "$$out"; exit 1; fi
	go vet ./...

bench-api:
	./scripts/bench-api.sh

HOSTS ?= 3
cluster-up:
	go run ./test/harness/devcluster up --hosts $(HOSTS)

cluster-down:
	go run ./test/harness/devcluster down

cluster-status:
	go run ./test/harness/devcluster status
