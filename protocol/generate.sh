#!/usr/bin/env bash
# Regenerates every committed *.pb.go file in the repository from its .proto
# source. Pinned tool versions, so the output is the same on every machine:
#   protoc 3.21.12 (Debian bookworm's protobuf-compiler package)
#   protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.0 (installed here into a private bin)
# CI runs this and fails if the tree changes (generated code must not drift).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.0

command -v protoc >/dev/null || { echo "generate.sh: protoc not found; install Debian's protobuf-compiler" >&2; exit 1; }
bin="$root/.bin"
mkdir -p "$bin"
if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO" ]; then
  GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
fi
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC#v}" ]; then
  GOBIN="$bin" GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
fi
export PATH="$bin:$PATH"

mod=github.com/cloudstate-go/cloudstate
proto_inc="$root/protocol/proto"

# The Cloudstate protocol and its frontend extensions: one Go package,
# github.com/cloudstate-go/cloudstate/protocol. The .proto files keep the
# reference go_package options; M flags place the Go code in this repository.
cs_files=(entity event_sourced value_entity crdt action entity_key legacy_entity_key eventing)
mflags=()
for f in "${cs_files[@]}"; do
  mflags+=("--go_opt=Mcloudstate/$f.proto=$mod/protocol;protocol" "--go-grpc_opt=Mcloudstate/$f.proto=$mod/protocol;protocol")
done
rm -f protocol/*.pb.go
protoc -I "$proto_inc" \
  --go_out=protocol --go_opt=paths=source_relative \
  --go-grpc_out=protocol --go-grpc_opt=paths=source_relative \
  "${mflags[@]}" \
  $(printf "cloudstate/%s.proto " "${cs_files[@]}")
mv protocol/cloudstate/*.pb.go protocol/ && rmdir protocol/cloudstate

# Other protos (samples, TCK models, private state formats): each folder with a .proto file and
# a go_package option is generated in place.
for dir in $(find samples tck crdt internal test sdk -name '*.proto' -not -path '*/node_modules/*' -printf '%h\n' 2>/dev/null | sort -u); do
  rm -f "$dir"/*.pb.go
  protoc -I "$proto_inc" -I "$dir" \
    --go_out="$dir" --go_opt=paths=source_relative \
    --go-grpc_out="$dir" --go-grpc_opt=paths=source_relative \
    "${mflags[@]}" \
    "$dir"/*.proto
done
gofmt -l . >/dev/null
echo "generate.sh: done"
