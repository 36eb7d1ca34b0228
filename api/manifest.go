package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/marblemesh/marblemesh/api/wire"
)

// Manifest is the manifest a Coordinator runs.
type Manifest struct {
	// Raw is the manifest exactly as it was set.
	Raw []byte
	// Fingerprint is the hex SHA-256 of Raw, as the Coordinator reports it.
	Fingerprint string
	// RootSignature is the root key's ASN.1 ECDSA signature over
	// SHA-256(Raw), if the Coordinator sent one.
	RootSignature []byte
}

// ManifestFingerprint returns the hex SHA-256 of a manifest, which MarbleRun
// calls the manifest signature.
func ManifestFingerprint(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// ManifestSet sets the first manifest of a Coordinator (or replaces state
// it cannot unseal) and returns the recovery secrets, each encrypted with
// its owner's recovery key, by recovery key name.
func ManifestSet(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, manifest []byte) (map[string][]byte, error) {
	if len(manifest) == 0 {
		return nil, errors.New("the manifest is empty")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, manifestRequest("manifest", manifest))
	if err != nil {
		return nil, fmt.Errorf("setting the manifest: %w", err)
	}
	var d wire.RecoverySecrets
	if err := decodeOptional(resp.data, "answer", &d); err != nil {
		return nil, err
	}
	return d.RecoverySecrets, nil
}

// ManifestGet returns the Coordinator's manifest. It checks that the
// fingerprint matches the manifest and that the root signature, when sent,
// was made by the trusted root's key.
func ManifestGet(ctx context.Context, endpoint string, trustedRoot *x509.Certificate) (*Manifest, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "manifest"})
	if err != nil {
		return nil, fmt.Errorf("getting the manifest: %w", err)
	}
	var m Manifest
	if resp.legacy {
		var d wire.ManifestV1
		if err := decode(resp.data, "manifest", &d); err != nil {
			return nil, err
		}
		m = Manifest{Raw: d.Manifest, Fingerprint: d.ManifestSignature, RootSignature: d.ManifestSignatureRootECDSA}
	} else {
		var d wire.ManifestV2
		if err := decode(resp.data, "manifest", &d); err != nil {
			return nil, err
		}
		m = Manifest{Raw: d.Manifest, Fingerprint: d.Fingerprint, RootSignature: d.Signature}
	}
	if len(m.Raw) == 0 {
		return nil, ErrNoManifest
	}
	sum := sha256.Sum256(m.Raw)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, m.Fingerprint) {
		return nil, fmt.Errorf("the Coordinator reports manifest fingerprint %q, but the manifest it sent hashes to %s", m.Fingerprint, got)
	}
	m.Fingerprint = strings.ToLower(m.Fingerprint)
	if len(m.RootSignature) > 0 {
		pub, ok := trustedRoot.PublicKey.(*ecdsa.PublicKey)
		if !ok || !ecdsa.VerifyASN1(pub, sum[:], m.RootSignature) {
			return nil, errors.New("the manifest's signature was not made by the Coordinator's root key")
		}
	}
	return &m, nil
}

// UpdateLog returns the Coordinator's update log: one JSON object per
// entry, oldest first.
func UpdateLog(ctx context.Context, endpoint string, trustedRoot *x509.Certificate) ([]string, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "update"})
	if err != nil {
		return nil, fmt.Errorf("getting the update log: %w", err)
	}
	if resp.legacy {
		var joined string
		if err := decode(resp.data, "update log", &joined); err != nil {
			return nil, err
		}
		var entries []string
		for _, l := range strings.Split(joined, "\n") {
			if strings.TrimSpace(l) != "" {
				entries = append(entries, l)
			}
		}
		return entries, nil
	}
	var d wire.UpdateLogV2
	if err := decode(resp.data, "update log", &d); err != nil {
		return nil, err
	}
	return d.UpdateLog, nil
}

// UpdateResult is the Coordinator's answer to a manifest update or an
// acknowledgement.
type UpdateResult struct {
	// Message is the Coordinator's description, if it gave one.
	Message string
	// MissingAcknowledgments is how many more users must acknowledge a
	// pending full update; 0 once the update is applied.
	MissingAcknowledgments int
	// MissingUsers are the users who may still acknowledge.
	MissingUsers []string
	// RecoverySecrets are new encrypted recovery secrets, set when the
	// update changed the recovery keys.
	RecoverySecrets map[string][]byte
	// Legacy is true when a v1 Coordinator answered, which reports
	// nothing but success.
	Legacy bool
}

// updateResult converts the v2 answer of an update or acknowledgement.
func updateResult(u wire.UpdateV2) *UpdateResult {
	return &UpdateResult{
		Message: u.Message, MissingAcknowledgments: u.MissingAcknowledgments,
		MissingUsers: u.MissingUsers, RecoverySecrets: u.RecoverySecrets,
	}
}

// ManifestUpdateApply uploads an update manifest as a user. A package
// update (only Packages with higher SecurityVersions) is applied at once; a
// full update starts a multi-party update that other users acknowledge.
func ManifestUpdateApply(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, manifest []byte, clientCert *tls.Certificate) (*UpdateResult, error) {
	return postUpdateManifest(ctx, endpoint, trustedRoot, manifest, clientCert, "update", "applying the manifest update", "update answer", nil)
}

// ManifestUpdateAcknowledge acknowledges the pending update by uploading
// the same manifest as a user.
func ManifestUpdateAcknowledge(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, manifest []byte, clientCert *tls.Certificate) (*UpdateResult, error) {
	return postUpdateManifest(ctx, endpoint, trustedRoot, manifest, clientCert, "update-manifest", "acknowledging the manifest update", "acknowledgement answer", ErrNoPendingUpdate)
}

// postUpdateManifest uploads an update manifest to path and decodes the
// Coordinator's v2 or legacy answer. With notFound, a 404 is reported as
// that error.
func postUpdateManifest(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, manifest []byte, clientCert *tls.Certificate, path, doing, answer string, notFound error) (*UpdateResult, error) {
	if len(manifest) == 0 {
		return nil, errors.New("the update manifest is empty")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, clientCert)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, manifestRequest(path, manifest))
	if err != nil {
		if notFound != nil {
			err = notFoundAs(err, notFound)
		}
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	if resp.legacy {
		return legacyUpdateResult(resp.data, answer)
	}
	var d wire.UpdateV2
	if err := decodeOptional(resp.data, answer, &d); err != nil {
		return nil, err
	}
	return updateResult(d), nil
}

// manifestRequest posts a manifest: {"manifest": ...} on v2, the manifest
// itself on v1.
func manifestRequest(path string, manifest []byte) request {
	return request{
		method: http.MethodPost, path: path,
		v2Body: wire.ManifestRequest{Manifest: manifest},
		v1Body: manifest,
	}
}

// ManifestUpdateCancel cancels the pending update and returns the
// Coordinator's message.
func ManifestUpdateCancel(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, clientCert *tls.Certificate) (string, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, clientCert)
	if err != nil {
		return "", err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "update-cancel"})
	if err != nil {
		return "", fmt.Errorf("cancelling the manifest update: %w", notFoundAs(err, ErrNoPendingUpdate))
	}
	if resp.legacy {
		var msg string
		if err := decodeOptional(resp.data, "cancel answer", &msg); err != nil {
			return "", err
		}
		return msg, nil
	}
	var d wire.Message
	if err := decodeOptional(resp.data, "cancel answer", &d); err != nil {
		return "", err
	}
	return d.Message, nil
}

// PendingUpdate is a manifest update waiting for acknowledgements.
type PendingUpdate struct {
	// Manifest is the update manifest.
	Manifest []byte
	// Message is the Coordinator's description of the update's state.
	Message string
	// MissingUsers are the users who may still acknowledge.
	MissingUsers []string
}

// ManifestUpdateGet returns the pending update, or an error wrapping
// ErrNoPendingUpdate.
func ManifestUpdateGet(ctx context.Context, endpoint string, trustedRoot *x509.Certificate) (*PendingUpdate, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "update-manifest"})
	if err != nil {
		return nil, fmt.Errorf("getting the pending update: %w", notFoundAs(err, ErrNoPendingUpdate))
	}
	var d wire.PendingUpdate
	if err := decode(resp.data, "pending update", &d); err != nil {
		return nil, err
	}
	return &PendingUpdate{Manifest: d.Manifest, Message: d.Message, MissingUsers: d.MissingUsers}, nil
}

// legacyUpdateResult decodes a v1 answer to an update or acknowledgement:
// null, a message string, or an object with new RecoverySecrets.
func legacyUpdateResult(data json.RawMessage, what string) (*UpdateResult, error) {
	res := &UpdateResult{Legacy: true}
	trimmed := strings.TrimSpace(string(data))
	switch {
	case trimmed == "" || trimmed == "null":
	case strings.HasPrefix(trimmed, `"`):
		if err := decode(data, what, &res.Message); err != nil {
			return nil, err
		}
	default:
		var d wire.RecoverySecrets
		if err := decode(data, what, &d); err != nil {
			return nil, err
		}
		res.RecoverySecrets = d.RecoverySecrets
	}
	return res, nil
}

// notFoundAs adds sentinel to the chain of a 404 answer.
func notFoundAs(err, sentinel error) error {
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return err
}

// decodeOptional is decode that accepts a missing or null data member.
func decodeOptional(data json.RawMessage, what string, v any) error {
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	return decode(data, what, v)
}
