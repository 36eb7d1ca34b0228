package recovery

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
)

func TestGF(t *testing.T) {
	for a := 1; a < 256; a++ {
		if got := gfMul(byte(a), gfInv(byte(a))); got != 1 {
			t.Fatalf("%d * inv(%d) = %d", a, a, got)
		}
		if gfMul(byte(a), 1) != byte(a) || gfMul(byte(a), 0) != 0 {
			t.Fatalf("identity/zero fails for %d", a)
		}
	}
	// 0x57 * 0x83 = 0xc1 in the AES field.
	if got := gfMul(0x57, 0x83); got != 0xc1 {
		t.Fatalf("0x57*0x83 = %#x, want 0xc1", got)
	}
}

func TestShamirAnyK(t *testing.T) {
	secret := bytes.Repeat([]byte{0xa5, 0x01, 0xff}, 11)[:32]
	shares, err := splitShamir(rand.Reader, secret, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	for a := 0; a < 5; a++ {
		for b := a + 1; b < 5; b++ {
			for c := b + 1; c < 5; c++ {
				got, err := CombineShamir([][]byte{shares[c], shares[a], shares[b]})
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("shares %d,%d,%d: %x, %v", a, b, c, got, err)
				}
			}
		}
	}
	got, err := CombineShamir(shares[:2])
	if err == nil && bytes.Equal(got, secret) {
		t.Fatal("two of three required shares recovered the secret")
	}
	if _, err := CombineShamir([][]byte{shares[0], shares[0], shares[1]}); err == nil {
		t.Fatal("duplicate share accepted")
	}
}

func TestXOR(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares, err := splitXOR(rand.Reader, secret, 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := CombineXOR([][]byte{shares[2], shares[0], shares[1]})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("CombineXOR = %x, %v", got, err)
	}
	if got, _ := CombineXOR(shares[:2]); bytes.Equal(got, secret) {
		t.Fatal("two of three XOR shares gave the secret")
	}
}

func TestSplit(t *testing.T) {
	dataKey := bytes.Repeat([]byte{7}, 32)
	privs := map[string]*rsa.PrivateKey{}
	pems := map[string]string{}
	for i := 0; i < 4; i++ {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("owner%d", i)
		privs[name] = k
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		pems[name] = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	subset := func(n int) map[string]string {
		out := map[string]string{}
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("owner%d", i)
			out[name] = pems[name]
		}
		return out
	}
	decrypt := func(t *testing.T, enc map[string][]byte) map[string][]byte {
		out := map[string][]byte{}
		for name, ct := range enc {
			pt, err := rsa.DecryptOAEP(sha256.New(), nil, privs[name], ct, nil)
			if err != nil {
				t.Fatalf("decrypting %s: %v", name, err)
			}
			out[name] = pt
		}
		return out
	}
	tests := []struct {
		name      string
		keys      int
		threshold uint
		combine   func(map[string][]byte) ([]byte, error)
		shareLen  int
	}{
		{"single key is the data key", 1, 0, func(m map[string][]byte) ([]byte, error) { return m["owner0"], nil }, 32},
		{"n of n", 3, 0, func(m map[string][]byte) ([]byte, error) {
			return CombineXOR([][]byte{m["owner0"], m["owner1"], m["owner2"]})
		}, 32},
		{"n of n explicit", 2, 2, func(m map[string][]byte) ([]byte, error) {
			return CombineXOR([][]byte{m["owner0"], m["owner1"]})
		}, 32},
		{"2 of 4", 4, 2, func(m map[string][]byte) ([]byte, error) {
			return CombineShamir([][]byte{m["owner3"], m["owner1"]})
		}, 33},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := Split(rand.Reader, dataKey, subset(tc.keys), tc.threshold)
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) != tc.keys {
				t.Fatalf("%d shares, want %d", len(enc), tc.keys)
			}
			plain := decrypt(t, enc)
			for name, s := range plain {
				if len(s) != tc.shareLen {
					t.Fatalf("share %s has %d bytes, want %d", name, len(s), tc.shareLen)
				}
			}
			got, err := tc.combine(plain)
			if err != nil || !bytes.Equal(got, dataKey) {
				t.Fatalf("combined %x, %v", got, err)
			}
		})
	}
	t.Run("bad threshold", func(t *testing.T) {
		if _, err := Split(rand.Reader, dataKey, subset(3), 5); err == nil {
			t.Fatal("threshold above key count accepted")
		}
	})
	t.Run("bad key", func(t *testing.T) {
		if _, err := Split(rand.Reader, dataKey, map[string]string{"a": "x", "b": pems["owner0"]}, 0); err == nil {
			t.Fatal("invalid PEM accepted")
		}
	})
}
