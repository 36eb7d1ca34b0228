// Package ttlsconfig declares the value of MARBLE_TTLS_CONFIG: the
// transparent-TLS rules that the Coordinator derives from a marble's TLS
// tags and hands to the marble at activation.
//
// The Coordinator encodes a Document with encoding/json; the marble package
// decodes and checks it (marble.ParseTransparentTLS) and applies it. The
// package holds only the declaration, so that both sides share it without
// the Coordinator depending on the marble runtime.
//
// The layout is MarbleRun's:
//
//	{"tls": {
//	  "Outgoing": {"<addr>:<port>": {"cacrt": ..., "clicrt": ..., "clikey": ...}},
//	  "Incoming": {"*:<port>": {"cacrt": ..., "clicrt": ..., "clikey": ..., "clientAuth": true}}
//	}}
package ttlsconfig

import (
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// EnvName is the environment variable that carries a Document.
const EnvName = marbleenv.TransparentTLS

// Document is the whole value of MARBLE_TTLS_CONFIG. TLS is required: a
// document without it is not a configuration with no rules.
type Document struct {
	TLS *Rules `json:"tls"`
}

// Rules are a marble's transparent-TLS endpoints. Outgoing is keyed
// "<addr>:<port>" (host and port joined as by net.JoinHostPort), Incoming
// "*:<port>".
type Rules struct {
	Outgoing map[string]Endpoint `json:"Outgoing"`
	Incoming map[string]Incoming `json:"Incoming"`
}

// Endpoint is the TLS material of one rule, all PEM: the certificates that
// the peer must chain to, and the certificate and key this side presents.
type Endpoint struct {
	// CACert holds the trusted certificates (the Marble root).
	CACert string `json:"cacrt"`
	// Cert holds the certificate presented, leaf first.
	Cert string `json:"clicrt"`
	// Key holds the private key of Cert.
	Key string `json:"clikey"`
}

// Incoming is the rule of a listening port.
type Incoming struct {
	Endpoint
	// ClientAuth requires clients to present a certificate that chains to
	// CACert.
	ClientAuth bool `json:"clientAuth"`
}
