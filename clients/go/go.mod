module github.com/rlm-runtime/rlm/clients/go

// Minimum versions: the ones CI builds and tests against (Debian bookworm's
// golang-go 1.19, golang-google-grpc-dev 1.33.3, golang-google-protobuf-dev
// 1.28.1, golang-github-golang-protobuf-1-5-dev 1.5.2). Newer versions work
// too: the stubs use only SupportPackageIsVersion7 and the wrapper only
// long-standing grpc APIs (DialContext, WithInsecure).
go 1.19

require (
	github.com/golang/protobuf v1.5.2 // indirect
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
