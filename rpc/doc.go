// Package rpc holds the Coordinator's mesh API: the gRPC service
// rpc.Marble/Activate and its messages, generated from rpc.proto.
//
// Regenerate with `make generate` after editing rpc.proto.
package rpc
