package sgx

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// ErrPCKExtension is wrapped by errors about the PCK certificate's SGX extension.
var ErrPCKExtension = errors.New("PCK certificate SGX extension")

// CompSVNCount is the number of SGX TCB component SVNs.
const CompSVNCount = 16

// PCKExtension holds the fields of the SGX extension (OID
// 1.2.840.113741.1.13.1) of a PCK leaf certificate.
type PCKExtension struct {
	PPID    []byte
	CompSVN [CompSVNCount]int
	PCESVN  int
	CPUSVN  []byte
	PCEID   []byte
	FMSPC   []byte
	SGXType int
}

// OIDSGXExtension returns the object identifier of the SGX extension of a
// PCK certificate (a function, so that callers cannot change it).
func OIDSGXExtension() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
}

type oidValue struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// ParsePCKExtension extracts the SGX extension from a PCK leaf certificate.
// PPID, TCB, PCE-ID and FMSPC are required.
func ParsePCKExtension(cert *x509.Certificate) (*PCKExtension, error) {
	base := OIDSGXExtension()
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(base) {
			return parsePCKExtensionValue(ext.Value)
		}
	}
	return nil, fmt.Errorf("%w: OID %s not present in certificate %q", ErrPCKExtension, base, cert.Subject.CommonName)
}

func subOID(arcs ...int) asn1.ObjectIdentifier {
	return append(OIDSGXExtension(), arcs...)
}

func parseSequence(what string, der []byte) ([]oidValue, error) {
	var items []oidValue
	rest, err := asn1.Unmarshal(der, &items)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPCKExtension, what, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %s: %d trailing bytes, expected 0", ErrPCKExtension, what, len(rest))
	}
	return items, nil
}

func octets(what string, v asn1.RawValue, size int) ([]byte, error) {
	var b []byte
	if _, err := asn1.Unmarshal(v.FullBytes, &b); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPCKExtension, what, err)
	}
	if size > 0 && len(b) != size {
		return nil, fmt.Errorf("%w: %s: expected %d bytes, found %d", ErrPCKExtension, what, size, len(b))
	}
	return b, nil
}

func parsePCKExtensionValue(der []byte) (*PCKExtension, error) {
	items, err := parseSequence("extension value", der)
	if err != nil {
		return nil, err
	}
	out := &PCKExtension{}
	var seen [6]bool
	for _, it := range items {
		switch {
		case it.ID.Equal(subOID(1)):
			out.PPID, err = octets("PPID", it.Value, 16)
			seen[1] = true
		case it.ID.Equal(subOID(2)):
			err = parseTCB(out, it.Value.FullBytes)
			seen[2] = true
		case it.ID.Equal(subOID(3)):
			out.PCEID, err = octets("PCE-ID", it.Value, 2)
			seen[3] = true
		case it.ID.Equal(subOID(4)):
			out.FMSPC, err = octets("FMSPC", it.Value, 6)
			seen[4] = true
		case it.ID.Equal(subOID(5)):
			var e asn1.Enumerated
			if _, uerr := asn1.Unmarshal(it.Value.FullBytes, &e); uerr != nil {
				err = fmt.Errorf("%w: SGX type: %w", ErrPCKExtension, uerr)
			}
			out.SGXType = int(e)
		}
		if err != nil {
			return nil, err
		}
	}
	for i, name := range map[int]string{1: "PPID", 2: "TCB", 3: "PCE-ID", 4: "FMSPC"} {
		if !seen[i] {
			return nil, fmt.Errorf("%w: %s (OID %s) missing", ErrPCKExtension, name, subOID(i))
		}
	}
	return out, nil
}

func parseTCB(out *PCKExtension, der []byte) error {
	items, err := parseSequence("TCB", der)
	if err != nil {
		return err
	}
	var seen [19]bool
	for _, it := range items {
		if len(it.ID) != len(subOID(2))+1 || !it.ID[:len(it.ID)-1].Equal(subOID(2)) {
			continue
		}
		n := it.ID[len(it.ID)-1]
		switch {
		case n >= 1 && n <= 17:
			var v int
			if _, err := asn1.Unmarshal(it.Value.FullBytes, &v); err != nil {
				return fmt.Errorf("%w: TCB component %d: %w", ErrPCKExtension, n, err)
			}
			if v < 0 || (n <= 16 && v > 255) || v > 65535 {
				return fmt.Errorf("%w: TCB component %d: value %d out of range", ErrPCKExtension, n, v)
			}
			if n == 17 {
				out.PCESVN = v
			} else {
				out.CompSVN[n-1] = v
			}
			seen[n] = true
		case n == 18:
			if out.CPUSVN, err = octets("CPUSVN", it.Value, 16); err != nil {
				return err
			}
			seen[n] = true
		}
	}
	for n := 1; n <= 17; n++ {
		if !seen[n] {
			return fmt.Errorf("%w: TCB component %s missing", ErrPCKExtension, subOID(2, n))
		}
	}
	return nil
}
