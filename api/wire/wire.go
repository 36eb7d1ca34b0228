// Package wire declares the bodies of the Coordinator's REST client API,
// once for both sides: the Coordinator encodes them and package api decodes
// them. Paths under /api/v2/ use the V2 shapes (lowerCamel field names);
// MarbleRun's legacy paths without the prefix use the V1 shapes (Go field
// names). Bodies that both versions share carry no version in their name.
//
// Every answer is a JSend envelope: Success (HTTP 200), Fail (a request the
// Coordinator refuses: 400, 401, 413) or Error (403, 404, 405, 410 and
// server errors). The golden files in internal/coordinator/clientapi/
// testdata/wire hold every endpoint's answers byte for byte.
package wire

import "encoding/json"

// JSend status values.
const (
	StatusSuccess = "success"
	StatusFail    = "fail"
	StatusError   = "error"
)

// Success is the envelope of an answered request.
type Success[T any] struct {
	Status string `json:"status"`
	Data   T      `json:"data"`
}

// Fail is the envelope of a refused request: Data is always null.
type Fail struct {
	Status  string `json:"status"`
	Data    any    `json:"data"`
	Message string `json:"message"`
}

// Error is the envelope of a denied request or a server error.
type Error struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Reply is what a client decodes any of the three envelopes into.
type Reply struct {
	Status  string          `json:"status"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
}

// StatusV2 answers GET /api/v2/status. Replica describes the Coordinator
// that answered; it is absent from Coordinators that do not report it.
// Replicas describes every replica of a distributed Coordinator, the one
// that answered first; it is absent outside distributed mode.
type StatusV2 struct {
	Code     int             `json:"code"`
	Message  string          `json:"message"`
	Replica  *ReplicaStatus  `json:"replica,omitempty"`
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
}

// ReplicaStatus describes one Coordinator (one replica of a distributed
// Coordinator, or the only one).
type ReplicaStatus struct {
	// Name is the Coordinator's Pod name, or its host name.
	Name string `json:"name"`
	// Ready tells whether it holds the key and the current state (what
	// GET /readyz answers).
	Ready bool `json:"ready"`
	// Degraded tells whether it answers from a state that may be behind
	// the shared one: reads and activations that need no write go on,
	// writes are refused as Unavailable.
	Degraded bool `json:"degraded"`
	// Reason says why it is not Ready; empty when it is.
	Reason string `json:"reason,omitempty"`
	// Generation is the generation of the stored state it serves; 0 when
	// its store does not report one (the file store).
	Generation uint64 `json:"generation,omitempty"`
	// StoreBackend is where the state is kept: "file" or "k8s-secret".
	StoreBackend string `json:"storeBackend"`
}

// StatusV1 answers GET /status.
type StatusV1 struct {
	StatusCode    int
	StatusMessage string
}

// QuoteV2 answers GET /api/v2/quote: the Coordinator's certificate chain
// (PEM) and its quote over the root certificate (and the nonce, if given).
type QuoteV2 struct {
	Cert  string `json:"cert"`
	Quote []byte `json:"quote"`
}

// QuoteV1 answers GET /quote.
type QuoteV1 struct {
	Cert  string
	Quote []byte
}

// ManifestV2 answers GET /api/v2/manifest.
type ManifestV2 struct {
	Signature   []byte `json:"manifestSignatureRootECDSA"`
	Fingerprint string `json:"manifestFingerprint"`
	Manifest    []byte `json:"manifest"`
}

// ManifestV1 answers GET /manifest; ManifestSignature is the fingerprint.
type ManifestV1 struct {
	ManifestSignatureRootECDSA []byte
	ManifestSignature          string
	Manifest                   []byte
}

// ManifestRequest is the v2 body of manifest set, update and acknowledge.
type ManifestRequest struct {
	Manifest []byte `json:"manifest"`
}

// RecoverySecrets answers a manifest set in both versions, and a v1 update
// that produced new recovery secrets: each owner's encrypted secret.
type RecoverySecrets struct {
	RecoverySecrets map[string][]byte
}

// UpdateLogV2 answers GET /api/v2/update; the v1 answer is the entries
// joined by newlines, one string.
type UpdateLogV2 struct {
	UpdateLog []string `json:"updateLog"`
}

// UpdateV2 answers a v2 update and acknowledgement.
type UpdateV2 struct {
	Message                string            `json:"message,omitempty"`
	MissingAcknowledgments int               `json:"missingAcknowledgments"`
	MissingUsers           []string          `json:"missingUsers"`
	RecoverySecrets        map[string][]byte `json:"recoverySecrets,omitempty"`
}

// PendingUpdate answers GET update-manifest in both versions.
type PendingUpdate struct {
	Manifest     []byte   `json:"manifest"`
	Message      string   `json:"message"`
	MissingUsers []string `json:"missingUsers"`
}

// Message answers a v2 update cancellation.
type Message struct {
	Message string `json:"message"`
}

// SecretsV2 is the v2 body of a secrets read (T the secret) and write (T
// the user secret); v1 uses the bare map.
type SecretsV2[T any] struct {
	Secrets map[string]T `json:"secrets"`
}

// RecoverRequest is the body of POST /api/v2/recover.
type RecoverRequest struct {
	Secret    []byte `json:"recoverySecret"`
	Signature []byte `json:"recoverySecretSignature"`
}

// RecoverV2 answers POST /api/v2/recover.
type RecoverV2 struct {
	Remaining int    `json:"remaining"`
	Message   string `json:"message"`
}

// RecoveryKey answers GET /api/v2/recover/public-key.
type RecoveryKey struct {
	Algorithm string `json:"algorithm"`
	PublicKey []byte `json:"ephemeralPublicKey"`
}

// SignQuoteRequest is the body of POST /api/v2/sign-quote.
type SignQuoteRequest struct {
	Quote []byte `json:"sgxQuote"`
}

// SignQuote answers POST /api/v2/sign-quote.
type SignQuote struct {
	TCBStatus string `json:"tcbStatus"`
	Signature []byte `json:"verificationSignature"`
}

// CounterRequest is the body of POST /api/v2/monotonic-counter; Value is
// required.
type CounterRequest struct {
	Name  string  `json:"name"`
	Value *uint64 `json:"value"`
}

// Counter answers POST /api/v2/monotonic-counter with the previous value.
type Counter struct {
	Value uint64 `json:"value"`
}
