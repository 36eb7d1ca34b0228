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

// readManifestV2 reads a {"manifest": base64} body.
func readManifestV2(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, ok := readBody(w, r, maxManifestBody)
	if !ok {
		return nil, false
	}
	var req wire.ManifestRequest
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return nil, false
	}
	if len(req.Manifest) == 0 {
		writeFail(w, http.StatusBadRequest, "request body: manifest is missing or empty")
		return nil, false
	}
	return req.Manifest, true
}

func (a *API) postUpdateV2(w http.ResponseWriter, r *http.Request) {
	raw, ok := readManifestV2(w, r)
	if !ok {
		return
	}
	res, err := a.core.UpdateManifest(peerCert(r), raw)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.UpdateV2{
		MissingAcknowledgments: res.MissingAcknowledgments,
		MissingUsers:           nonNilStrings(res.MissingUsers),
		RecoverySecrets:        res.RecoverySecrets,
	})
}

// postUpdateV1 answers null like MarbleRun, unless the update produced new
// recovery secrets, which are then returned as v1 manifest set does:
// they exist nowhere else.
func (a *API) postUpdateV1(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r, maxManifestBody)
	if !ok {
		return
	}
	res, err := a.core.UpdateManifest(peerCert(r), raw)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	a.writeV1Update(w, res, nil)
}

func (a *API) writeV1Update(w http.ResponseWriter, res *core.UpdateResult, fallback any) {
	if len(res.RecoverySecrets) > 0 {
		writeSuccess(w, wire.RecoverySecrets{RecoverySecrets: res.RecoverySecrets})
		return
	}
	writeSuccess(w, fallback)
}

func (a *API) getPendingUpdate(w http.ResponseWriter, r *http.Request) {
	p, err := a.core.PendingUpdate()
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.PendingUpdate{Manifest: p.Manifest, Message: pendingMessage(p), MissingUsers: nonNilStrings(p.MissingUsers)})
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

func (a *API) postAcknowledgeV2(w http.ResponseWriter, r *http.Request) {
	raw, ok := readManifestV2(w, r)
	if !ok {
		return
	}
	res, err := a.core.AcknowledgeUpdate(peerCert(r), raw)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.UpdateV2{
		Message:                acknowledgeMessage(res),
		MissingAcknowledgments: res.MissingAcknowledgments,
		MissingUsers:           nonNilStrings(res.MissingUsers),
		RecoverySecrets:        res.RecoverySecrets,
	})
}

func (a *API) postAcknowledgeV1(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r, maxManifestBody)
	if !ok {
		return
	}
	res, err := a.core.AcknowledgeUpdate(peerCert(r), raw)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	a.writeV1Update(w, res, acknowledgeMessage(res))
}

const cancelMessage = "Update successfully cancelled"

func (a *API) postCancelV2(w http.ResponseWriter, r *http.Request) {
	if err := a.core.CancelUpdate(peerCert(r)); err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.Message{Message: cancelMessage})
}

func (a *API) postCancelV1(w http.ResponseWriter, r *http.Request) {
	if err := a.core.CancelUpdate(peerCert(r)); err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, cancelMessage)
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

func (a *API) getSecretsV2(w http.ResponseWriter, r *http.Request) {
	names, ok := secretNames(w, r)
	if !ok {
		return
	}
	secrets, err := a.core.ReadSecrets(peerCert(r), names)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.SecretsV2[manifest.Secret]{Secrets: secrets})
}

func (a *API) getSecretsV1(w http.ResponseWriter, r *http.Request) {
	names, ok := secretNames(w, r)
	if !ok {
		return
	}
	secrets, err := a.core.ReadSecrets(peerCert(r), names)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, secrets)
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

func (a *API) postSecretsV2(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxSecretsBody)
	if !ok {
		return
	}
	var req wire.SecretsV2[json.RawMessage]
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	a.writeSecrets(w, r, req.Secrets)
}

func (a *API) postSecretsV1(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxSecretsBody)
	if !ok {
		return
	}
	var req map[string]json.RawMessage
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	a.writeSecrets(w, r, req)
}

func (a *API) writeSecrets(w http.ResponseWriter, r *http.Request, raw map[string]json.RawMessage) {
	secrets, err := decodeUserSecrets(raw)
	if err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if err := a.core.WriteSecrets(peerCert(r), secrets); err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, nil)
}

func (a *API) postRecoverV2(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxRecoverBody)
	if !ok {
		return
	}
	var req wire.RecoverRequest
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if len(req.Secret) == 0 || len(req.Signature) == 0 {
		writeFail(w, http.StatusBadRequest, "request body: recoverySecret and recoverySecretSignature are both required")
		return
	}
	remaining, err := a.core.Recover(req.Secret, req.Signature)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	msg := "Recovery successful."
	if remaining > 0 {
		msg = fmt.Sprintf("Secret was processed successfully. Upload the next secret. Remaining secrets: %d", remaining)
	}
	writeSuccess(w, wire.RecoverV2{Remaining: remaining, Message: msg})
}

func (a *API) recoverGoneV1(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusGone, "recovery through the v1 API is disabled: use POST /api/v2/recover with a signed recovery secret")
}

func (a *API) getRecoveryKeyV2(w http.ResponseWriter, r *http.Request) {
	der, err := a.core.RecoveryPublicKey()
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.RecoveryKey{Algorithm: "RSA", PublicKey: der})
}

func (a *API) postSignQuoteV2(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxQuoteBody)
	if !ok {
		return
	}
	var req wire.SignQuoteRequest
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	sig, tcb, err := a.core.SignQuote(r.Context(), req.Quote)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.SignQuote{TCBStatus: tcb, Signature: sig})
}

func (a *API) postCounterV2(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxCounterBody)
	if !ok {
		return
	}
	var req wire.CounterRequest
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if req.Value == nil {
		writeFail(w, http.StatusBadRequest, "request body: value is required")
		return
	}
	prev, err := a.core.SetMonotonicCounter(peerCert(r), req.Name, *req.Value)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.Counter{Value: prev})
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
