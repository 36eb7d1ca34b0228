package attestation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
)

func TestBindHash(t *testing.T) {
	tests := []struct {
		name  string
		parts [][]byte
		want  []byte
	}{
		{"single", [][]byte{[]byte("cert")}, sha256Sum([]byte("cert"))},
		{"concatenated", [][]byte{[]byte("ce"), []byte("rt")}, sha256Sum([]byte("cert"))},
		{"with nonce", [][]byte{[]byte("root"), []byte("nonce")}, sha256Sum([]byte("rootnonce"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rd := BindHash(tc.parts...)
			if !bytes.Equal(rd[:32], tc.want) {
				t.Fatalf("first half = %x, want %x", rd[:32], tc.want)
			}
			if !bytes.Equal(rd[32:], make([]byte, 32)) {
				t.Fatalf("second half not zero: %x", rd[32:])
			}
		})
	}
}

func TestSimulationIssuer(t *testing.T) {
	var iss Issuer = SimulationIssuer{}
	ev, err := iss.Issue(context.Background(), [ReportDataSize]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 0 {
		t.Fatalf("simulation evidence must be empty, got %d bytes", len(ev))
	}
	if !iss.Insecure() {
		t.Fatal("simulation issuer must report itself insecure")
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
