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
)

func (a *API) getStatusV2(w http.ResponseWriter, _ *http.Request) {
	state, msg := a.core.Status()
	writeSuccess(w, wire.StatusV2{Code: int(state), Message: msg})
}

func (a *API) getStatusV1(w http.ResponseWriter, _ *http.Request) {
	state, msg := a.core.Status()
	writeSuccess(w, wire.StatusV1{StatusCode: int(state), StatusMessage: msg})
}

func (a *API) getQuoteV2(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeFail(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return
	}
	var nonce []byte
	if q.Has("nonce") {
		n, err := decodeNonce(q.Get("nonce"))
		if err != nil {
			writeFail(w, http.StatusBadRequest, err.Error())
			return
		}
		nonce = n
	}
	chain, quote, err := a.core.Quote(r.Context(), nonce)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.QuoteV2{Cert: string(chain), Quote: nonNil(quote)})
}

func (a *API) getQuoteV1(w http.ResponseWriter, r *http.Request) {
	chain, quote, err := a.core.Quote(r.Context(), nil)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.QuoteV1{Cert: string(chain), Quote: nonNil(quote)})
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

func (a *API) getManifestV2(w http.ResponseWriter, _ *http.Request) {
	raw, sig, ok := a.core.ManifestInfo()
	if !ok {
		writeFail(w, http.StatusBadRequest, "no manifest has been set yet")
		return
	}
	sum := sha256.Sum256(raw)
	writeSuccess(w, wire.ManifestV2{Signature: sig, Fingerprint: hex.EncodeToString(sum[:]), Manifest: raw})
}

func (a *API) getManifestV1(w http.ResponseWriter, _ *http.Request) {
	raw, sig, ok := a.core.ManifestInfo()
	if !ok {
		writeSuccess(w, struct{}{})
		return
	}
	sum := sha256.Sum256(raw)
	writeSuccess(w, wire.ManifestV1{ManifestSignatureRootECDSA: sig, ManifestSignature: hex.EncodeToString(sum[:]), Manifest: raw})
}

func (a *API) postManifestV2(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxManifestBody)
	if !ok {
		return
	}
	var req wire.ManifestRequest
	if err := decodeStrict(body, &req); err != nil {
		writeFail(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	a.setManifest(w, r, req.Manifest)
}

func (a *API) postManifestV1(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxManifestBody)
	if !ok {
		return
	}
	a.setManifest(w, r, body)
}

func (a *API) setManifest(w http.ResponseWriter, r *http.Request, raw []byte) {
	secrets, err := a.core.SetManifest(raw)
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	writeSuccess(w, wire.RecoverySecrets{RecoverySecrets: secrets})
}

func (a *API) getUpdateLogV2(w http.ResponseWriter, r *http.Request) {
	log, err := a.core.UpdateLog()
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	if log == nil {
		log = []string{}
	}
	writeSuccess(w, wire.UpdateLogV2{UpdateLog: log})
}

func (a *API) getUpdateLogV1(w http.ResponseWriter, r *http.Request) {
	log, err := a.core.UpdateLog()
	if err != nil {
		a.writeCoreError(w, r, err)
		return
	}
	joined := strings.Join(log, "\n")
	if joined != "" {
		joined += "\n"
	}
	writeSuccess(w, joined)
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
