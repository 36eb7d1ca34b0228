// Package recovery splits the Coordinator's data key among the owners'
// recovery keys and puts it back together.
//
// Layouts, chosen by the manifest:
//   - one recovery key (or none but one listed): the data key itself;
//   - N keys, threshold 0 or N: N random shares whose XOR is the data key;
//   - N keys, threshold k with 2 ≤ k < N: Shamir shares over GF(2^8), any k
//     of which give the data key (each share is one x byte and the y bytes).
//
// Each share is encrypted with its owner's RSA key (RSA-OAEP, SHA-256).
package recovery

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ParsePublicKey parses a PEM "PUBLIC KEY" holding an RSA key.
func ParsePublicKey(pemText string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("recovery keys must be RSA keys, got %T", pub)
	}
	return rsaPub, nil
}

// Split divides dataKey for the named recovery keys (PEM) with threshold
// and returns each owner's share encrypted with RSA-OAEP-SHA256.
func Split(rnd io.Reader, dataKey []byte, keys map[string]string, threshold uint) (map[string][]byte, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	sort.Strings(names)
	shares, err := Shares(rnd, dataKey, len(names), threshold)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	for i, name := range names {
		ct, err := EncryptShare(rnd, keys[name], shares[i])
		if err != nil {
			return nil, fmt.Errorf("recovery key %q: %w", name, err)
		}
		out[name] = ct
	}
	return out, nil
}

// Shares divides dataKey into n plaintext shares in the layout the
// threshold selects (see the package documentation). Split gives share i
// to the i-th recovery key name in ascending order.
func Shares(rnd io.Reader, dataKey []byte, n int, threshold uint) ([][]byte, error) {
	switch {
	case n < 1:
		return nil, errors.New("no recovery keys")
	case n == 1:
		return [][]byte{append([]byte(nil), dataKey...)}, nil
	case threshold == 0 || int(threshold) == n:
		return splitXOR(rnd, dataKey, n)
	case threshold >= 2 && int(threshold) < n:
		return splitShamir(rnd, dataKey, n, int(threshold))
	}
	return nil, fmt.Errorf("recovery threshold %d is invalid for %d keys", threshold, n)
}

// EncryptShare encrypts a share for the owner of the PEM public key with
// RSA-OAEP-SHA256.
func EncryptShare(rnd io.Reader, pemKey string, share []byte) ([]byte, error) {
	pub, err := ParsePublicKey(pemKey)
	if err != nil {
		return nil, err
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rnd, pub, share, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypting share: %w", err)
	}
	return ct, nil
}

func splitXOR(rnd io.Reader, secret []byte, n int) ([][]byte, error) {
	shares := make([][]byte, n)
	last := append([]byte(nil), secret...)
	for i := 0; i < n-1; i++ {
		shares[i] = make([]byte, len(secret))
		if _, err := io.ReadFull(rnd, shares[i]); err != nil {
			return nil, fmt.Errorf("generating share: %w", err)
		}
		subtle.XORBytes(last, last, shares[i])
	}
	shares[n-1] = last
	return shares, nil
}

// CombineXOR returns the XOR of all shares.
func CombineXOR(shares [][]byte) ([]byte, error) {
	if len(shares) == 0 {
		return nil, errors.New("no shares")
	}
	out := append([]byte(nil), shares[0]...)
	for _, s := range shares[1:] {
		if len(s) != len(out) {
			return nil, errors.New("shares differ in length")
		}
		subtle.XORBytes(out, out, s)
	}
	return out, nil
}

// splitShamir returns n shares of secret, k of which recover it. Share i
// is the byte x=i+1 followed by the polynomials' values at x.
func splitShamir(rnd io.Reader, secret []byte, n, k int) ([][]byte, error) {
	if n > 255 {
		return nil, errors.New("at most 255 Shamir shares")
	}
	shares := make([][]byte, n)
	for i := range shares {
		shares[i] = make([]byte, 1+len(secret))
		shares[i][0] = byte(i + 1)
	}
	coeffs := make([]byte, k)
	for pos, b := range secret {
		coeffs[0] = b
		if _, err := io.ReadFull(rnd, coeffs[1:]); err != nil {
			return nil, fmt.Errorf("generating polynomial: %w", err)
		}
		for i := range shares {
			shares[i][1+pos] = evalPoly(coeffs, byte(i+1))
		}
	}
	return shares, nil
}

// CombineShamir recovers the secret from at least threshold distinct shares.
func CombineShamir(shares [][]byte) ([]byte, error) {
	if len(shares) < 2 {
		return nil, errors.New("at least two shares are needed")
	}
	size := len(shares[0])
	xs := make([]byte, len(shares))
	for i, s := range shares {
		if len(s) != size || size < 2 {
			return nil, errors.New("shares differ in length")
		}
		if s[0] == 0 {
			return nil, errors.New("share has x = 0")
		}
		for j := 0; j < i; j++ {
			if xs[j] == s[0] {
				return nil, errors.New("duplicate share")
			}
		}
		xs[i] = s[0]
	}
	out := make([]byte, size-1)
	for pos := range out {
		var acc byte
		for i, s := range shares {
			// Lagrange basis polynomial i evaluated at 0.
			num, den := byte(1), byte(1)
			for j := range shares {
				if i == j {
					continue
				}
				num = gfMul(num, xs[j])
				den = gfMul(den, xs[i]^xs[j])
			}
			acc ^= gfMul(s[1+pos], gfMul(num, gfInv(den)))
		}
		out[pos] = acc
	}
	return out, nil
}

func evalPoly(coeffs []byte, x byte) byte {
	var y byte
	for i := len(coeffs) - 1; i >= 0; i-- {
		y = gfMul(y, x) ^ coeffs[i]
	}
	return y
}

// gfMul multiplies in GF(2^8) with the AES polynomial, in constant time.
func gfMul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		mask := -(b & 1)
		p ^= a & mask
		carry := -(a >> 7)
		a = (a << 1) ^ (0x1b & carry)
		b >>= 1
	}
	return p
}

// gfInv returns a^254 = a^-1 for a ≠ 0.
func gfInv(a byte) byte {
	r := a
	for i := 0; i < 6; i++ {
		r = gfMul(gfMul(r, r), a)
	}
	return gfMul(r, r)
}
