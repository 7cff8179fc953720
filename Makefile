# Everyday commands. Each is one line of shell you can also run by hand.

.PHONY: demo test vet generate check-generated bench

# Run the shopping-cart demo: the sample function and a proxy in front of it.
demo:
	go run ./cmd/cloudstate dev ./samples/shoppingcart

# Every test of every module (root, sdk, protocol), with the race detector.
test: vet
	go test -race -count=1 ./...
	cd sdk && go test -race -count=1 ./...
	cd protocol && go test -count=1 ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...
	cd sdk && go vet ./...
	cd protocol && go vet ./...

# Regenerate every *.pb.go from its .proto (pinned protoc plugins).
generate:
	./protocol/generate.sh

# Fail when the committed generated code differs from what generate makes.
check-generated: generate
	@git diff --exit-code -- '*.pb.go' || { echo "generated code is stale: run make generate and commit"; exit 1; }

# The load generator's side-by-side benchmark (see bench/README.md).
bench:
	go run ./cmd/loadgen bench
