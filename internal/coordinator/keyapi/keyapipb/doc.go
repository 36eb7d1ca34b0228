// Package keyapipb holds the Coordinator's key API between replicas: the
// gRPC service keyapi.KeyAPI/GetKeyEncryptionKey and its messages,
// generated from keyapi.proto.
//
// Regenerate with `make generate` after editing keyapi.proto.
package keyapipb
