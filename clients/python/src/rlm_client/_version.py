__version__ = "0.1.0"

#: The gRPC / protobuf versions the committed stubs were generated with
#: (grpcio-tools 1.85.1 bundles protoc 35.1 = protobuf Python 7.35.1).
GRPC_GENERATED_VERSION = "1.85.1"
PROTOBUF_GENERATED_VERSION = "7.35.1"
