// Package wire holds the protobuf frames exchanged between a driver and its
// executors (frames.proto), the generated gRPC service, and the generated
// encoders and decoders (protoc-gen-go-vtproto) that Codec uses.
//
// Regenerate with `go generate ./internal/wire`; the tool versions are pinned
// below so that the committed output is reproducible.
package wire

//go:generate sh -c "bin=$(mktemp -d) && GOBIN=$bin go install github.com/bufbuild/buf/cmd/buf@v1.75.0 && GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 && GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2 && GOBIN=$bin go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.1-0.20240319094008-0393e58bdf10 && PATH=$bin:$PATH buf generate; status=$?; rm -rf $bin; exit $status"
