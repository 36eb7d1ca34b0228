package core

import (
	"context"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// TestManifestSealModeRules checks that the manifest's Config.SealMode is
// the mode the data key is sealed in, that an update re-seals it, and that
// status names the mode in force.
func TestManifestSealModeRules(t *testing.T) {
	u := newGovUsers(t)
	owner := testsupport.NewRecoveryKey(t)
	withMode := func(mode string, keys map[string]*testsupport.RecoveryKey) []byte {
		m := govManifest(u, keys)
		section(m, "Config")["SealMode"] = mode
		return encodeManifest(t, m)
	}
	keys := map[string]*testsupport.RecoveryKey{"owner": owner}

	mem := store.NewMemory()
	c := newSimCore(t, mem)
	if _, msg := c.Status(); !strings.Contains(msg, "Seal mode: ProductKey.") {
		t.Fatalf("status before a manifest: %q", msg)
	}
	if _, err := c.SetManifest(context.Background(), withMode("Disabled", nil)); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "RecoveryKeys") {
		t.Fatalf("Disabled without recovery keys: %v", err)
	}
	if _, err := c.SetManifest(context.Background(), withMode("uniquekey", keys)); err != nil {
		t.Fatal(err)
	}
	if got := mem.SealMode(); got != seal.ModeUniqueKey {
		t.Fatalf("stored seal mode %s, want the manifest's UniqueKey", got)
	}
	if _, msg := c.Status(); !strings.Contains(msg, "Seal mode: UniqueKey.") {
		t.Fatalf("status: %q", msg)
	}

	update := func(raw []byte) {
		t.Helper()
		if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, raw); err != nil {
			t.Fatal(err)
		}
		res, err := c.AcknowledgeUpdate(context.Background(), u.bob.Cert, raw)
		if err != nil || !res.Applied || res.RecoverySecrets != nil {
			t.Fatalf("acknowledging: %+v %v", res, err)
		}
	}
	// An empty SealMode means the Coordinator's default.
	update(withMode("", keys))
	if got := mem.SealMode(); got != seal.ModeProductKey {
		t.Fatalf("stored seal mode %s after an update to the default", got)
	}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, withMode("Disabled", nil)); KindOf(err) != KindInvalidArgument {
		t.Fatalf("update to Disabled without recovery keys: %v", err)
	}
	update(withMode("Disabled", keys))
	if got := mem.SealMode(); got != seal.ModeDisabled {
		t.Fatalf("stored seal mode %s after an update to Disabled", got)
	}
	if _, msg := c.Status(); !strings.Contains(msg, "Seal mode: Disabled.") {
		t.Fatalf("status: %q", msg)
	}
	// Nothing is sealed: a restart enters recovery and says why.
	c = newSimCore(t, mem)
	if s, msg := c.Status(); s != StateRecovery || !strings.Contains(msg, "Seal mode: Disabled.") {
		t.Fatalf("restart in Disabled: state %v %q", s, msg)
	}
}

// TestDefaultSealMode checks the Coordinator's default mode before a
// manifest and for a manifest without SealMode.
func TestDefaultSealMode(t *testing.T) {
	u := newGovUsers(t)
	mem := store.NewMemory()
	newCore := func(mode seal.Mode) (*Core, error) {
		return New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: mem, DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048, DefaultSealMode: mode})
	}
	if _, err := newCore(seal.ModeDisabled); err == nil {
		t.Fatal("a default seal mode of Disabled was accepted")
	}
	if _, err := newCore("Sealed"); err == nil {
		t.Fatal("an unknown default seal mode was accepted")
	}
	c, err := newCore(seal.ModeUniqueKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := mem.SealMode(); got != seal.ModeUniqueKey {
		t.Fatalf("fresh state sealed in %s, want the default UniqueKey", got)
	}
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	if got := mem.SealMode(); got != seal.ModeUniqueKey {
		t.Fatalf("manifest without SealMode sealed in %s, want the default UniqueKey", got)
	}
	// Restarted with another default, a manifest without SealMode follows it.
	if _, err := newCore(seal.ModeProductKey); err != nil {
		t.Fatal(err)
	}
	if got := mem.SealMode(); got != seal.ModeProductKey {
		t.Fatalf("after a restart with default ProductKey: %s", got)
	}
}

// noUniqueKeyStore is a store on a machine without a UniqueKey sealer.
type noUniqueKeyStore struct{ store.Store }

func (s noUniqueKeyStore) CanSeal(mode seal.Mode) bool { return mode != seal.ModeUniqueKey }

// TestSealModeWithoutItsKeyIsRefused: a manifest, or an update, that asks
// for a seal mode this machine has no key for is refused when it is set,
// not accepted and then left unapplied.
func TestSealModeWithoutItsKeyIsRefused(t *testing.T) {
	u := newGovUsers(t)
	keys := map[string]*testsupport.RecoveryKey{"owner": testsupport.NewRecoveryKey(t)}
	withMode := func(mode string) []byte {
		m := govManifest(u, keys)
		section(m, "Config")["SealMode"] = mode
		return encodeManifest(t, m)
	}
	mem := store.NewMemory()
	c := newSimCore(t, noUniqueKeyStore{mem})
	if _, err := c.SetManifest(context.Background(), withMode("UniqueKey")); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "Config.SealMode UniqueKey cannot be used on this machine") {
		t.Fatalf("manifest asking for UniqueKey: %v", err)
	}
	if s, _ := c.Status(); s != StateAcceptingManifest {
		t.Fatalf("state after the refused manifest: %v", s)
	}
	if _, err := c.SetManifest(context.Background(), withMode("ProductKey")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, withMode("UniqueKey")); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "cannot be used on this machine") {
		t.Fatalf("update asking for UniqueKey: %v", err)
	}
	if got := mem.SealMode(); got != seal.ModeProductKey {
		t.Fatalf("stored seal mode %s", got)
	}
}
