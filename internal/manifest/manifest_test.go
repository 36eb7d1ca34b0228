package manifest

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
)

func TestAllowed(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	m.Roles["mixed"] = Role{ResourceType: "secrets", ResourceNames: []string{"dbKey"}, Actions: []string{"writesecret"}}
	m.Users["carol"] = User{Certificate: f.carol, Roles: []string{"mixed", "ghost"}}
	tests := []struct {
		user, action, resourceType, resource string
		want                                 bool
	}{
		{"alice", "UpdateManifest", "Manifest", "", true},
		{"alice", "updatemanifest", "MANIFEST", "anything", true},
		{"alice", "ReadSecret", "Secrets", "sharedKey", true},
		{"alice", "ReadSecret", "Secrets", "dbKey", false},
		{"alice", "WriteSecret", "Secrets", "apiToken", false},
		{"alice", "UpdateSecurityVersion", "Packages", "backend", false},
		{"bob", "WriteSecret", "Secrets", "apiToken", true},
		{"bob", "readSECRET", "secrets", "dbKey", true},
		{"bob", "UpdateSecurityVersion", "Packages", "backend", true},
		{"bob", "UpdateSecurityVersion", "Packages", "frontend", false},
		{"bob", "UpdateSecurityVersion", "Secrets", "backend", false},
		{"bob", "WriteSecret", "Secrets", "DBKEY", false},
		{"carol", "WriteSecret", "Secrets", "dbKey", true},
		{"carol", "ReadSecret", "Secrets", "dbKey", false},
		{"carol", "UpdateManifest", "Manifest", "", false},
		{"mallory", "UpdateManifest", "Manifest", "", false},
	}
	for _, tt := range tests {
		if got := m.Allowed(tt.user, tt.action, tt.resourceType, tt.resource); got != tt.want {
			t.Errorf("Allowed(%q, %q, %q, %q) = %v, want %v", tt.user, tt.action, tt.resourceType, tt.resource, got, tt.want)
		}
	}
	if got := m.UsersAllowed(ActionUpdateManifest, ResourceManifest, ""); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("UsersAllowed(UpdateManifest) = %v", got)
	}
	if got := m.UsersAllowed(ActionWriteSecret, ResourceSecrets, "dbKey"); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Errorf("UsersAllowed(WriteSecret, dbKey) = %v", got)
	}
}

func TestUserForCertificate(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	block, _ := pem.Decode([]byte(f.bob))
	if name, ok := m.UserForCertificate(block.Bytes); !ok || name != "bob" {
		t.Errorf("UserForCertificate(bob) = %q, %v", name, ok)
	}
	block, _ = pem.Decode([]byte(f.carol))
	if name, ok := m.UserForCertificate(block.Bytes); ok {
		t.Errorf("UserForCertificate(carol) = %q, want no user", name)
	}
	cert, err := m.Users["alice"].ParseCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(cert.Raw); err != nil || cert.Subject.CommonName != "alice" {
		t.Errorf("ParseCertificate() = %v, %v", cert.Subject, err)
	}
}

func TestConfigHelpers(t *testing.T) {
	c := Config{FeatureGates: []string{"signquoteendpoint", "MONOTONICCOUNTER"}}
	for _, gate := range []string{FeatureSignQuoteEndpoint, FeatureMonotonicCounter, "SIGNQUOTEENDPOINT"} {
		if !c.FeatureEnabled(gate) {
			t.Errorf("FeatureEnabled(%q) = false", gate)
		}
	}
	if c.FeatureEnabled(FeatureAzureHSMSealing) || (Config{}).FeatureEnabled(FeatureSignQuoteEndpoint) {
		t.Error("FeatureEnabled() reports a gate that is not listed")
	}
	modes := map[string]string{"": "", "productkey": "ProductKey", "UNIQUEKEY": "UniqueKey", "Disabled": "Disabled"}
	for in, want := range modes {
		if got, ok := (Config{SealMode: in}).CanonicalSealMode(); !ok || got != want {
			t.Errorf("CanonicalSealMode(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := (Config{SealMode: "Product"}).CanonicalSealMode(); ok {
		t.Error("CanonicalSealMode accepted an unknown mode")
	}
}

func TestParseRecoveryKey(t *testing.T) {
	f := newFixtures(t)
	key, err := ParseRecoveryKey(f.recoveryA)
	if err != nil || key.N.BitLen() != 2048 {
		t.Errorf("ParseRecoveryKey() = %v, %v", key, err)
	}
	for _, bad := range []string{"", "x", f.ecdsaPub, f.alice, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := ParseRecoveryKey(bad); err == nil {
			t.Errorf("ParseRecoveryKey(%.30q) succeeded", bad)
		}
	}
}
