package seal

import (
	"bytes"
	"errors"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// sealers returns every Sealer implementation under test.
func sealers(t *testing.T) map[string]Sealer {
	t.Helper()
	aes, err := NewAESGCMSealer(testKey(7))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Sealer{
		"simulation": SimulationSealer{},
		"aesgcm":     aes,
	}
}

func TestRoundTrip(t *testing.T) {
	inputs := []struct {
		name      string
		plaintext []byte
		ad        []byte
	}{
		{"empty", nil, nil},
		{"data key", testKey(0xaa), []byte("header")},
		{"empty ad", []byte("secret"), []byte{}},
		{"large", bytes.Repeat([]byte("x"), 1<<16), bytes.Repeat([]byte("a"), 300)},
	}
	for sname, s := range sealers(t) {
		for _, in := range inputs {
			t.Run(sname+"/"+in.name, func(t *testing.T) {
				sealed, err := s.Seal(in.plaintext, in.ad)
				if err != nil {
					t.Fatalf("Seal: %v", err)
				}
				got, err := s.Unseal(sealed, in.ad)
				if err != nil {
					t.Fatalf("Unseal: %v", err)
				}
				if !bytes.Equal(got, in.plaintext) {
					t.Fatalf("Unseal returned %d bytes, want the %d sealed", len(got), len(in.plaintext))
				}
				if len(got) > 0 {
					got[0] ^= 1
					again, err := s.Unseal(sealed, in.ad)
					if err != nil || !bytes.Equal(again, in.plaintext) {
						t.Fatal("mutating the returned plaintext changed the sealed value")
					}
				}
			})
		}
	}
}

func TestWrongAdditionalData(t *testing.T) {
	for name, s := range sealers(t) {
		t.Run(name, func(t *testing.T) {
			sealed, err := s.Seal([]byte("data key"), []byte("aad-1"))
			if err != nil {
				t.Fatal(err)
			}
			for _, ad := range [][]byte{[]byte("aad-2"), nil, []byte("aad-1\x00"), []byte("aad-")} {
				if _, err := s.Unseal(sealed, ad); !errors.Is(err, ErrAuthentication) {
					t.Errorf("Unseal with ad %q: err = %v, want ErrAuthentication", ad, err)
				}
			}
		})
	}
}

func TestFlippedBits(t *testing.T) {
	for name, s := range sealers(t) {
		t.Run(name, func(t *testing.T) {
			ad := []byte("ad")
			sealed, err := s.Seal([]byte("0123456789abcdef"), ad)
			if err != nil {
				t.Fatal(err)
			}
			for i := range len(sealed) * 8 {
				mod := bytes.Clone(sealed)
				mod[i/8] ^= 1 << (i % 8)
				if _, err := s.Unseal(mod, ad); err == nil {
					t.Fatalf("Unseal accepted the value with bit %d flipped", i)
				} else if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("bit %d: err = %v, want ErrAuthentication or ErrMalformed", i, err)
				}
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	for name, s := range sealers(t) {
		t.Run(name, func(t *testing.T) {
			sealed, err := s.Seal([]byte("0123456789abcdef"), nil)
			if err != nil {
				t.Fatal(err)
			}
			for n := range len(sealed) {
				if _, err := s.Unseal(sealed[:n], nil); err == nil {
					t.Fatalf("Unseal accepted the first %d of %d bytes", n, len(sealed))
				}
			}
			if _, err := s.Unseal(append(bytes.Clone(sealed), 0), nil); err == nil {
				t.Fatal("Unseal accepted a value with a trailing byte")
			}
		})
	}
}

func TestAESGCMWrongKey(t *testing.T) {
	a, err := NewAESGCMSealer(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewAESGCMSealer(testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := a.Seal([]byte("data key"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unseal(sealed, []byte("ad")); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("Unseal with another key: err = %v, want ErrAuthentication", err)
	}
}

func TestAESGCMKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := NewAESGCMSealer(make([]byte, n)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("NewAESGCMSealer(%d bytes): err = %v, want ErrInvalidKey", n, err)
		}
		s := AESGCMSealer{Key: make([]byte, n)}
		if _, err := s.Seal([]byte("x"), nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Seal with a %d-byte key: err = %v, want ErrInvalidKey", n, err)
		}
		if _, err := s.Unseal(make([]byte, 64), nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Unseal with a %d-byte key: err = %v, want ErrInvalidKey", n, err)
		}
	}
}

func TestAESGCMCopiesKeyAndUsesFreshNonces(t *testing.T) {
	key := testKey(3)
	s, err := NewAESGCMSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	key[0] ^= 0xff
	if _, err := s.Unseal(sealed, nil); err != nil {
		t.Fatalf("changing the caller's key slice affected the sealer: %v", err)
	}
	again, err := s.Seal([]byte("data key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of the same plaintext are identical: nonce is not random")
	}
	if bytes.Contains(sealed, []byte("data key")) {
		t.Fatal("AES-GCM sealed value contains the plaintext")
	}
}

func TestFormatsAreDistinct(t *testing.T) {
	all := sealers(t)
	for from, a := range all {
		sealed, err := a.Seal(testKey(9), nil)
		if err != nil {
			t.Fatal(err)
		}
		for to, b := range all {
			if from == to {
				continue
			}
			if _, err := b.Unseal(sealed, nil); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAuthentication) {
				t.Errorf("%s unsealed a value sealed by %s: err = %v", to, from, err)
			}
		}
	}
}

func TestInsecure(t *testing.T) {
	if !(SimulationSealer{}).Insecure() {
		t.Error("SimulationSealer.Insecure() = false, want true")
	}
	if (AESGCMSealer{Key: testKey(1)}).Insecure() {
		t.Error("AESGCMSealer.Insecure() = true, want false")
	}
}

func TestID(t *testing.T) {
	if (SimulationSealer{}).ID() != (ID{}) {
		t.Error("SimulationSealer.ID() is not all zeros")
	}
	a, err := NewAESGCMSealer(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := NewAESGCMSealer(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewAESGCMSealer(testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != a2.ID() {
		t.Error("two AES-GCM sealers with the same key have different IDs")
	}
	if a.ID() == b.ID() || a.ID() == (ID{}) {
		t.Errorf("AES-GCM IDs %x and %x: want distinct and non-zero", a.ID(), b.ID())
	}
	id := a.ID()
	if bytes.Contains(testKey(1), id[:]) {
		t.Error("the AES-GCM ID reveals the key")
	}
	if (AESGCMSealer{Key: make([]byte, 5)}).ID() != (ID{}) {
		t.Error("a sealer without a valid key has a non-zero ID")
	}
}
