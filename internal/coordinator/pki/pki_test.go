package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"slices"
	"testing"
	"time"
)

func TestChain(t *testing.T) {
	now := time.Now()
	root, err := NewRoot([]string{"coordinator.example"}, []net.IP{net.ParseIP("10.1.2.3")}, now)
	if err != nil {
		t.Fatal(err)
	}
	inter, marbleRoot, err := NewIntermediate(root, []string{"coordinator.example"}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := IssueMarbleCert(marbleRoot, inter.Key, MarbleCertRequest{
		UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend",
		DNSNames: []string{"backend"}, PublicKey: &key.PublicKey,
	}, now)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("root", func(t *testing.T) {
		if root.Cert.Subject.CommonName != RootCommonName || !root.Cert.IsCA {
			t.Fatalf("root: CN %q IsCA %v", root.Cert.Subject.CommonName, root.Cert.IsCA)
		}
		if !slices.Contains(root.Cert.DNSNames, "coordinator.example") {
			t.Fatalf("root DNS names %v", root.Cert.DNSNames)
		}
		for _, want := range []string{"10.1.2.3", "127.0.0.1", "::1"} {
			if !containsIP(root.Cert.IPAddresses, want) {
				t.Fatalf("root lacks IP %s: %v", want, root.Cert.IPAddresses)
			}
		}
		if err := root.Cert.CheckSignatureFrom(root.Cert); err != nil {
			t.Fatalf("root not self-signed: %v", err)
		}
	})
	t.Run("leaf via marble root", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(marbleRoot)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "backend", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("leaf does not chain to marble root: %v", err)
		}
	})
	t.Run("leaf via intermediate and root", func(t *testing.T) {
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root.Cert)
		inters.AddCert(inter.Cert)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("leaf does not chain to root: %v", err)
		}
	})
	t.Run("leaf from another deployment is refused", func(t *testing.T) {
		other, err := NewRoot(nil, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		_, otherMarbleRoot, err := NewIntermediate(other, nil, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(otherMarbleRoot)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
			t.Fatal("leaf verified against a foreign marble root")
		}
	})
	t.Run("leaf fields", func(t *testing.T) {
		if leaf.Subject.CommonName != "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1" {
			t.Fatalf("CN = %q", leaf.Subject.CommonName)
		}
		typ, err := MarbleType(leaf)
		if err != nil || typ != "backend" {
			t.Fatalf("MarbleType = %q, %v", typ, err)
		}
		if leaf.IsCA {
			t.Fatal("leaf must not be a CA")
		}
		if !containsIP(leaf.IPAddresses, "127.0.0.1") || !containsIP(leaf.IPAddresses, "::1") {
			t.Fatalf("leaf IPs %v", leaf.IPAddresses)
		}
	})
	t.Run("no marble type", func(t *testing.T) {
		if _, err := MarbleType(root.Cert); err == nil {
			t.Fatal("root has no marble type; want error")
		}
	})
}

func TestSplitHosts(t *testing.T) {
	tests := []struct {
		in      []string
		wantDNS []string
		wantIPs []string
	}{
		{nil, nil, nil},
		{[]string{"localhost"}, []string{"localhost"}, nil},
		{[]string{"a", "127.0.0.2", "", "::1", "b.example"}, []string{"a", "b.example"}, []string{"127.0.0.2", "::1"}},
	}
	for _, tc := range tests {
		dns, ips := SplitHosts(tc.in)
		if !slices.Equal(dns, tc.wantDNS) {
			t.Errorf("SplitHosts(%v) DNS = %v, want %v", tc.in, dns, tc.wantDNS)
		}
		if len(ips) != len(tc.wantIPs) {
			t.Fatalf("SplitHosts(%v) IPs = %v, want %v", tc.in, ips, tc.wantIPs)
		}
		for i := range ips {
			if !ips[i].Equal(net.ParseIP(tc.wantIPs[i])) {
				t.Errorf("IP %d = %v, want %v", i, ips[i], tc.wantIPs[i])
			}
		}
	}
}

func containsIP(ips []net.IP, s string) bool {
	want := net.ParseIP(s)
	for _, ip := range ips {
		if ip.Equal(want) {
			return true
		}
	}
	return false
}
