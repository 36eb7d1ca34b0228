package core

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strconv"

	"github.com/marblemesh/marblemesh/internal/manifest"
)

// MaxCounterNameSize bounds the name of a monotonic counter.
const MaxCounterNameSize = 1024

// SignQuote verifies an SGX quote for a third party and signs the verdict
// with the root key: an ASN.1 ECDSA signature over
// SHA-256(base64(quote) ‖ TCB status), with the quote exactly as given.
// The manifest must enable the SignQuoteEndpoint feature gate.
func (c *Core) SignQuote(ctx context.Context, quote []byte) (signature []byte, tcbStatus string, err error) {
	v := c.view.Load()
	if v.dep.manifest == nil || !v.dep.manifest.Config.FeatureEnabled(manifest.FeatureSignQuoteEndpoint) {
		return nil, "", newError(KindPermissionDenied, nil, "quote signing is not enabled: the manifest's Config.FeatureGates does not list %s", manifest.FeatureSignQuoteEndpoint)
	}
	if len(quote) == 0 {
		return nil, "", newError(KindInvalidArgument, nil, "the quote is empty")
	}
	if c.cfg.Verifier == nil {
		return nil, "", newError(KindUnimplemented, nil, "this Coordinator runs in simulation mode and has no quote verifier, so it can neither verify nor sign quotes")
	}
	claims, err := c.cfg.Verifier.Verify(ctx, quote)
	if err != nil {
		return nil, "", newError(KindInvalidArgument, err, "the quote is invalid")
	}
	digest := sha256.Sum256([]byte(base64.StdEncoding.EncodeToString(quote) + claims.TCBStatus))
	sig, err := ecdsa.SignASN1(rand.Reader, v.dep.root.Key, digest[:])
	if err != nil {
		return nil, "", fmt.Errorf("signing the quote verdict: %w", err)
	}
	return sig, claims.TCBStatus, nil
}

// counterKey names a marble's counter in the store, after prefixCounter.
func counterKey(id marbleIdentity, name string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(id.marbleType)) + ":" + enc.EncodeToString([]byte(id.uuid)) + ":" + enc.EncodeToString([]byte(name))
}

// SetMonotonicCounter raises the marble's counter name to value and
// returns its previous value; a value that is not higher leaves the
// counter as it is. Counters belong to a marble type and UUID, start at 0
// and are stored before the answer. The manifest must enable the
// MonotonicCounter feature gate and the caller must present its marble
// certificate.
func (c *Core) SetMonotonicCounter(ctx context.Context, marbleCert *x509.Certificate, name string, value uint64) (uint64, error) {
	var prev uint64
	err := c.write(ctx, "setting a monotonic counter", func() error {
		v := c.view.Load()
		if v.dep.manifest == nil || !v.dep.manifest.Config.FeatureEnabled(manifest.FeatureMonotonicCounter) {
			return newError(KindPermissionDenied, nil, "monotonic counters are not enabled: the manifest's Config.FeatureGates does not list %s", manifest.FeatureMonotonicCounter)
		}
		id, err := authenticateMarble(v.dep, marbleCert)
		if err != nil {
			return err
		}
		if name == "" {
			return newError(KindInvalidArgument, nil, "the counter name is empty")
		}
		if len(name) > MaxCounterNameSize {
			return newError(KindInvalidArgument, nil, "the counter name is %d bytes, more than %d", len(name), MaxCounterNameSize)
		}
		key := counterKey(id, name)
		prev = c.counters[key]
		if value > prev {
			if err := c.commit(ctx, map[string][]byte{prefixCounter + key: []byte(strconv.FormatUint(value, 10))}); err != nil {
				return fmt.Errorf("storing monotonic counter: %w", err)
			}
			c.counters[key] = value
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return prev, nil
}
