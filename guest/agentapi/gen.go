package agentapi

// The generated files are committed, so building needs no protoc. To
// regenerate (apt-get install protobuf-compiler; the plugins at these
// versions):
//   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
//   go install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10
//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto
