package clientapi

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// peerCert returns the leaf certificate the client presented, or nil.
func peerCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	return r.TLS.PeerCertificates[0]
}

// cancelMessage answers a cancelled update.
const cancelMessage = "Update successfully cancelled"

// userRequest is a request made as the user of the client certificate.
type userRequest[T any] struct {
	user *x509.Certificate
	in   T
}

// asUser reads a request with read and attaches the client certificate.
func asUser[T any](read func(w http.ResponseWriter, r *http.Request) (T, bool)) func(w http.ResponseWriter, r *http.Request) (userRequest[T], bool) {
	return func(w http.ResponseWriter, r *http.Request) (userRequest[T], bool) {
		in, ok := read(w, r)
		return userRequest[T]{peerCert(r), in}, ok
	}
}

// noInput reads nothing.
func noInput(http.ResponseWriter, *http.Request) (struct{}, bool) { return struct{}{}, true }

// readManifestV2 reads a {"manifest": base64} body with a manifest in it.
func readManifestV2(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	var req wire.ManifestRequest
	if !readJSON(w, r, maxManifestBody, &req) {
		return nil, false
	}
	if len(req.Manifest) == 0 {
		writeFail(w, http.StatusBadRequest, "request body: manifest is missing or empty")
		return nil, false
	}
	return req.Manifest, true
}

// readManifestV1 reads a bare manifest body.
func readManifestV1(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	return readBody(w, r, maxManifestBody)
}

// writeV1Update answers null like MarbleRun, unless the update produced new
// recovery secrets, which are then returned as v1 manifest set does: they
// exist nowhere else. An acknowledgement answers its message instead of null.
func writeV1Update(w http.ResponseWriter, res *core.UpdateResult, fallback any) {
	if len(res.RecoverySecrets) > 0 {
		writeSuccess(w, wire.RecoverySecrets{RecoverySecrets: res.RecoverySecrets})
		return
	}
	writeSuccess(w, fallback)
}

// addGovernance routes updates, secrets, recovery, quote signing and
// monotonic counters.
func (a *API) addGovernance() {
	manifestReaders := per(asUser(readManifestV2), asUser(readManifestV1))
	register(a, "update", http.MethodPost, op[userRequest[[]byte], *core.UpdateResult]{
		read: manifestReaders,
		call: func(r *http.Request, req userRequest[[]byte]) (*core.UpdateResult, error) {
			return a.core.UpdateManifest(r.Context(), req.user, req.in)
		},
		write: per(
			func(w http.ResponseWriter, res *core.UpdateResult) {
				writeSuccess(w, wire.UpdateV2{
					MissingAcknowledgments: res.MissingAcknowledgments,
					MissingUsers:           nonNilStrings(res.MissingUsers),
					RecoverySecrets:        res.RecoverySecrets,
				})
			},
			func(w http.ResponseWriter, res *core.UpdateResult) { writeV1Update(w, res, nil) }),
	})
	register(a, "update-manifest", http.MethodGet, op[struct{}, *core.PendingUpdate]{
		call: func(*http.Request, struct{}) (*core.PendingUpdate, error) { return a.core.PendingUpdate() },
		write: both(func(w http.ResponseWriter, p *core.PendingUpdate) {
			writeSuccess(w, wire.PendingUpdate{Manifest: p.Manifest, Message: pendingMessage(p), MissingUsers: nonNilStrings(p.MissingUsers)})
		}),
	})
	register(a, "update-manifest", http.MethodPost, op[userRequest[[]byte], *core.UpdateResult]{
		read: manifestReaders,
		call: func(r *http.Request, req userRequest[[]byte]) (*core.UpdateResult, error) {
			return a.core.AcknowledgeUpdate(r.Context(), req.user, req.in)
		},
		write: per(
			func(w http.ResponseWriter, res *core.UpdateResult) {
				writeSuccess(w, wire.UpdateV2{
					Message:                acknowledgeMessage(res),
					MissingAcknowledgments: res.MissingAcknowledgments,
					MissingUsers:           nonNilStrings(res.MissingUsers),
					RecoverySecrets:        res.RecoverySecrets,
				})
			},
			func(w http.ResponseWriter, res *core.UpdateResult) { writeV1Update(w, res, acknowledgeMessage(res)) }),
	})
	register(a, "update-cancel", http.MethodPost, op[userRequest[struct{}], struct{}]{
		read: both(asUser(noInput)),
		call: func(r *http.Request, req userRequest[struct{}]) (struct{}, error) {
			return struct{}{}, a.core.CancelUpdate(r.Context(), req.user)
		},
		write: per(
			func(w http.ResponseWriter, _ struct{}) { writeSuccess(w, wire.Message{Message: cancelMessage}) },
			func(w http.ResponseWriter, _ struct{}) { writeSuccess(w, cancelMessage) }),
	})
	register(a, "secrets", http.MethodGet, op[userRequest[[]string], map[string]manifest.Secret]{
		read: both(asUser(secretNames)),
		call: func(_ *http.Request, req userRequest[[]string]) (map[string]manifest.Secret, error) {
			return a.core.ReadSecrets(req.user, req.in)
		},
		write: per(
			func(w http.ResponseWriter, secrets map[string]manifest.Secret) {
				writeSuccess(w, wire.SecretsV2[manifest.Secret]{Secrets: secrets})
			},
			func(w http.ResponseWriter, secrets map[string]manifest.Secret) { writeSuccess(w, secrets) }),
	})
	register(a, "secrets", http.MethodPost, op[userRequest[map[string]core.UserSecret], struct{}]{
		read: per(
			asUser(func(w http.ResponseWriter, r *http.Request) (map[string]core.UserSecret, bool) {
				var req wire.SecretsV2[json.RawMessage]
				if !readJSON(w, r, maxSecretsBody, &req) {
					return nil, false
				}
				return userSecrets(w, req.Secrets)
			}),
			asUser(func(w http.ResponseWriter, r *http.Request) (map[string]core.UserSecret, bool) {
				var req map[string]json.RawMessage
				if !readJSON(w, r, maxSecretsBody, &req) {
					return nil, false
				}
				return userSecrets(w, req)
			})),
		call: func(r *http.Request, req userRequest[map[string]core.UserSecret]) (struct{}, error) {
			return struct{}{}, a.core.WriteSecrets(r.Context(), req.user, req.in)
		},
		write: both(func(w http.ResponseWriter, _ struct{}) { writeSuccess(w, nil) }),
	})
	register(a, "recover", http.MethodPost, op[wire.RecoverRequest, int]{
		read: only(v2, func(w http.ResponseWriter, r *http.Request) (wire.RecoverRequest, bool) {
			var req wire.RecoverRequest
			if !readJSON(w, r, maxRecoverBody, &req) {
				return req, false
			}
			if len(req.Secret) == 0 || len(req.Signature) == 0 {
				writeFail(w, http.StatusBadRequest, "request body: recoverySecret and recoverySecretSignature are both required")
				return req, false
			}
			return req, true
		}),
		call: func(r *http.Request, req wire.RecoverRequest) (int, error) {
			return a.core.Recover(r.Context(), req.Secret, req.Signature)
		},
		write: only(v2, func(w http.ResponseWriter, remaining int) {
			msg := "Recovery successful."
			if remaining > 0 {
				msg = fmt.Sprintf("Secret was processed successfully. Upload the next secret. Remaining secrets: %d", remaining)
			}
			writeSuccess(w, wire.RecoverV2{Remaining: remaining, Message: msg})
		}),
	})
	// Recovery through v1 took an unsigned secret; it is refused, with the way to v2.
	a.handle("recover", http.MethodPost, nil, func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusGone, "recovery through the v1 API is disabled: use POST /api/v2/recover with a signed recovery secret")
	})
	register(a, "recover/public-key", http.MethodGet, op[struct{}, []byte]{
		call: func(*http.Request, struct{}) ([]byte, error) { return a.core.RecoveryPublicKey() },
		write: only(v2, func(w http.ResponseWriter, der []byte) {
			writeSuccess(w, wire.RecoveryKey{Algorithm: "RSA", PublicKey: der})
		}),
	})
	register(a, "sign-quote", http.MethodPost, op[[]byte, wire.SignQuote]{
		read: only(v2, func(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
			var req wire.SignQuoteRequest
			if !readJSON(w, r, maxQuoteBody, &req) {
				return nil, false
			}
			return req.Quote, true
		}),
		call: func(r *http.Request, quote []byte) (wire.SignQuote, error) {
			sig, tcb, err := a.core.SignQuote(r.Context(), quote)
			return wire.SignQuote{TCBStatus: tcb, Signature: sig}, err
		},
		write: only(v2, func(w http.ResponseWriter, out wire.SignQuote) { writeSuccess(w, out) }),
	})
	register(a, "monotonic-counter", http.MethodPost, op[userRequest[wire.CounterRequest], uint64]{
		read: only(v2, asUser(func(w http.ResponseWriter, r *http.Request) (wire.CounterRequest, bool) {
			var req wire.CounterRequest
			if !readJSON(w, r, maxCounterBody, &req) {
				return req, false
			}
			if req.Value == nil {
				writeFail(w, http.StatusBadRequest, "request body: value is required")
				return req, false
			}
			return req, true
		})),
		call: func(r *http.Request, req userRequest[wire.CounterRequest]) (uint64, error) {
			return a.core.SetMonotonicCounter(r.Context(), req.user, req.in.Name, *req.in.Value)
		},
		write: only(v2, func(w http.ResponseWriter, prev uint64) { writeSuccess(w, wire.Counter{Value: prev}) }),
	})
}

// userSecrets decodes uploaded user secrets, answering the request itself
// when they are malformed.
func userSecrets(w http.ResponseWriter, raw map[string]json.RawMessage) (map[string]core.UserSecret, bool) {
	secrets, err := decodeUserSecrets(raw)
	if err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return nil, false
	}
	return secrets, true
}

func pendingMessage(p *core.PendingUpdate) string {
	return fmt.Sprintf("A manifest update initiated by %s is pending: %d acknowledgement(s) missing", p.Initiator, p.MissingAcknowledgments)
}

func acknowledgeMessage(res *core.UpdateResult) string {
	if res.Applied {
		return "All users have acknowledged the update manifest. Update successfully applied"
	}
	return fmt.Sprintf("Acknowledgement successful: %d acknowledgement(s) missing", res.MissingAcknowledgments)
}

// secretNames reads the s=name parameters of a secrets query.
func secretNames(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeFail(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return nil, false
	}
	names := q["s"]
	if len(names) == 0 {
		writeFail(w, http.StatusBadRequest, "name the secrets to read with s=<name> query parameters")
		return nil, false
	}
	for _, n := range names {
		if n == "" {
			writeFail(w, http.StatusBadRequest, "a secret name in the query is empty")
			return nil, false
		}
	}
	return names, true
}

// userSecretJSON is the wire form of a user-defined secret: Cert is the
// base64 DER of a certificate, Private and Key are base64. Field names
// match case-insensitively; other fields are refused.
type userSecretJSON struct {
	Cert    json.RawMessage
	Private []byte
	Key     []byte
}

// decodeUserSecrets decodes a map of secret name to user secret.
func decodeUserSecrets(raw map[string]json.RawMessage) (map[string]core.UserSecret, error) {
	if len(raw) == 0 {
		return nil, errors.New("no secrets given")
	}
	out := make(map[string]core.UserSecret, len(raw))
	for name, entry := range raw {
		dec := json.NewDecoder(bytes.NewReader(entry))
		dec.DisallowUnknownFields()
		var s userSecretJSON
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("secret %q: %w (want an object with Cert, Private or Key)", name, err)
		}
		us := core.UserSecret{Private: s.Private, Key: s.Key}
		if c := bytes.TrimSpace(s.Cert); len(c) > 0 && !bytes.Equal(c, []byte("null")) {
			var b64 string
			if err := json.Unmarshal(c, &b64); err != nil {
				return nil, fmt.Errorf("secret %q: Cert must be the base64 DER of a certificate", name)
			}
			der, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return nil, fmt.Errorf("secret %q: Cert is not valid base64", name)
			}
			us.Cert = der
		}
		out[name] = us
	}
	return out, nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
