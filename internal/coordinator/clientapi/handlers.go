package clientapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

// statusOut is what status reports.
type statusOut struct {
	state   core.State
	msg     string
	replica wire.ReplicaStatus
	// replicas is nil outside distributed mode.
	replicas []wire.ReplicaStatus
}

// quoteOut is the Coordinator's certificate chain and quote.
type quoteOut struct{ chain, quote []byte }

// manifestOut is the manifest as set and the root key's signature over it.
type manifestOut struct {
	raw, sig []byte
	ok       bool
}

// addBasic routes status, quote, manifest and the update log.
func (a *API) addBasic() {
	register(a, "status", http.MethodGet, op[bool, statusOut]{
		// Only v2 reports every replica.
		read: only(v2, func(http.ResponseWriter, *http.Request) (bool, bool) { return true, true }),
		call: func(r *http.Request, allReplicas bool) (statusOut, error) {
			state, msg := a.core.Status()
			out := statusOut{state: state, msg: msg, replica: a.replica.Replica()}
			if allReplicas {
				out.replicas = a.replica.Replicas(r.Context())
			}
			return out, nil
		},
		write: per(
			func(w http.ResponseWriter, o statusOut) {
				writeSuccess(w, wire.StatusV2{Code: int(o.state), Message: o.msg, Replica: &o.replica, Replicas: o.replicas})
			},
			func(w http.ResponseWriter, o statusOut) {
				writeSuccess(w, wire.StatusV1{StatusCode: int(o.state), StatusMessage: o.msg})
			}),
	})
	register(a, "quote", http.MethodGet, op[[]byte, quoteOut]{
		// Only v2 takes a nonce.
		read: only(v2, readNonce),
		call: func(r *http.Request, nonce []byte) (quoteOut, error) {
			chain, quote, err := a.core.Quote(r.Context(), nonce)
			return quoteOut{chain, quote}, err
		},
		write: per(
			func(w http.ResponseWriter, o quoteOut) {
				writeSuccess(w, wire.QuoteV2{Cert: string(o.chain), Quote: nonNil(o.quote)})
			},
			func(w http.ResponseWriter, o quoteOut) {
				writeSuccess(w, wire.QuoteV1{Cert: string(o.chain), Quote: nonNil(o.quote)})
			}),
	})
	register(a, "manifest", http.MethodGet, op[struct{}, manifestOut]{
		call: func(*http.Request, struct{}) (manifestOut, error) {
			raw, sig, ok := a.core.ManifestInfo()
			return manifestOut{raw, sig, ok}, nil
		},
		write: per(
			func(w http.ResponseWriter, o manifestOut) {
				if !o.ok {
					writeFail(w, http.StatusBadRequest, "no manifest has been set yet")
					return
				}
				sum := sha256.Sum256(o.raw)
				writeSuccess(w, wire.ManifestV2{Signature: o.sig, Fingerprint: hex.EncodeToString(sum[:]), Manifest: o.raw})
			},
			func(w http.ResponseWriter, o manifestOut) {
				// MarbleRun's v1 answers an empty object before a manifest is set.
				if !o.ok {
					writeSuccess(w, struct{}{})
					return
				}
				sum := sha256.Sum256(o.raw)
				writeSuccess(w, wire.ManifestV1{ManifestSignatureRootECDSA: o.sig, ManifestSignature: hex.EncodeToString(sum[:]), Manifest: o.raw})
			}),
	})
	register(a, "manifest", http.MethodPost, op[[]byte, map[string][]byte]{
		read: per(
			func(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
				var req wire.ManifestRequest
				if !readJSON(w, r, maxManifestBody, &req) {
					return nil, false
				}
				return req.Manifest, true
			},
			func(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
				return readBody(w, r, maxManifestBody)
			}),
		call: func(r *http.Request, raw []byte) (map[string][]byte, error) {
			return a.core.SetManifest(r.Context(), raw)
		},
		write: both(func(w http.ResponseWriter, secrets map[string][]byte) {
			writeSuccess(w, wire.RecoverySecrets{RecoverySecrets: secrets})
		}),
	})
	register(a, "update", http.MethodGet, op[struct{}, []string]{
		call: func(*http.Request, struct{}) ([]string, error) { return a.core.UpdateLog() },
		write: per(
			func(w http.ResponseWriter, log []string) {
				if log == nil {
					log = []string{}
				}
				writeSuccess(w, wire.UpdateLogV2{UpdateLog: log})
			},
			func(w http.ResponseWriter, log []string) {
				// v1 answers one string of newline-terminated entries.
				joined := strings.Join(log, "\n")
				if joined != "" {
					joined += "\n"
				}
				writeSuccess(w, joined)
			}),
	})
}

// readNonce reads the optional nonce query parameter of a v2 quote request.
func readNonce(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeFail(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return nil, false
	}
	if !q.Has("nonce") {
		return nil, true
	}
	n, err := decodeNonce(q.Get("nonce"))
	if err != nil {
		writeFail(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return n, true
}

// decodeNonce accepts base64url with or without padding.
func decodeNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("nonce is empty")
	}
	n, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("nonce is not base64url: %w", err)
	}
	if len(n) > maxNonceSize {
		return nil, fmt.Errorf("nonce is longer than %d bytes", maxNonceSize)
	}
	return n, nil
}

// readJSON reads a body of at most limit bytes holding exactly one JSON
// value into v, answering the request itself when it cannot.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body, ok := readBody(w, r, limit)
	if !ok {
		return false
	}
	if err := decodeStrict(body, v); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// readBody reads a non-empty body of at most limit bytes, answering the
// request itself when it cannot.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeFail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", limit))
		return nil, false
	case err != nil:
		writeFail(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return nil, false
	case len(body) == 0:
		writeFail(w, http.StatusBadRequest, "request body is empty")
		return nil, false
	}
	return body, true
}

// decodeStrict decodes exactly one JSON value.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
