// Package sgx parses Intel SGX/TDX ECDSA quotes (versions 3, 4 and 5) and
// verifies SGX quotes with the Data Center Attestation Primitives (DCAP)
// collateral, using only the Go standard library.
package sgx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes of the fixed quote structures.
const (
	HeaderSize      = 48
	ReportBodySize  = 384
	TDReport10Size  = 584
	TDReport15Size  = 648
	SignatureSize   = 64
	PublicKeySize   = 64
	OEHeaderSize    = 16
	reportDataStart = 320
)

// Header field values.
const (
	AttestationKeyECDSAP256 = 2
	TEETypeSGX              = 0x00000000
	TEETypeTDX              = 0x00000081
	CertDataPCKChain        = 5
	CertDataQEReport        = 6
	oeReportVersion         = 1
	oeReportTypeRemote      = 2
)

// Body descriptor types of a version 5 quote.
const (
	BodyTypeSGX  = 1
	BodyTypeTD10 = 2
	BodyTypeTD15 = 3
)

// IntelQEVendorID returns the QE vendor ID of Intel's quoting enclaves.
func IntelQEVendorID() [16]byte {
	return [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
}

// Errors returned by the parser; every returned error wraps one of them.
var (
	ErrTruncated = errors.New("sgx quote truncated")
	ErrTrailing  = errors.New("sgx quote has trailing bytes")
	ErrMalformed = errors.New("sgx quote malformed")
)

// Header is the 48-byte quote header.
type Header struct {
	Version            uint16
	AttestationKeyType uint16
	// TEEType is the TEE type of v4/v5 quotes and the reserved field of v3.
	TEEType uint32
	// QESVN and PCESVN are set in v3 quotes only.
	QESVN      uint16
	PCESVN     uint16
	QEVendorID [16]byte
	UserData   [20]byte
}

// ReportBody is an SGX enclave report body (the enclave's or the QE's).
type ReportBody struct {
	CPUSVN       [16]byte
	MiscSelect   uint32
	ISVExtProdID [16]byte
	// Attributes holds FLAGS (little-endian, bytes 0..7) and XFRM (8..15).
	Attributes  [16]byte
	MREnclave   [32]byte
	MRSigner    [32]byte
	ConfigID    [64]byte
	ISVProdID   uint16
	ISVSVN      uint16
	ConfigSVN   uint16
	ISVFamilyID [16]byte
	ReportData  [64]byte
	// Raw is the 384 bytes the body was parsed from.
	Raw []byte
}

// Debug reports whether ATTRIBUTES.FLAGS has the DEBUG bit set.
func (r *ReportBody) Debug() bool { return r.Attributes[0]&0x02 != 0 }

// Quote is a parsed ECDSA quote.
type Quote struct {
	Header Header
	// BodyType is the v5 body descriptor type; v3 and v4 quotes get the
	// equivalent value derived from the TEE type.
	BodyType uint16
	// Body is the raw report body (384 bytes for SGX, 584 or 648 for TDX).
	Body []byte
	// Report is the parsed body of an SGX quote and nil for TDX.
	Report *ReportBody
	// Signed is every byte before the signature-data length field; the ISV
	// signature covers exactly these bytes.
	Signed            []byte
	Signature         [SignatureSize]byte
	AttestationKey    [PublicKeySize]byte
	QEReport          ReportBody
	QEReportSignature [SignatureSize]byte
	QEAuthData        []byte
	CertDataType      uint16
	CertData          []byte
}

type reader struct {
	b   []byte
	off int
}

func (r *reader) take(field string, n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.off < n {
		return nil, fmt.Errorf("%w: %s at offset %d needs %d bytes, %d remain", ErrTruncated, field, r.off, n, len(r.b)-r.off)
	}
	out := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return out, nil
}

func (r *reader) u16(field string) (uint16, error) {
	b, err := r.take(field, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) u32(field string) (uint32, error) {
	b, err := r.take(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) end(what string) error {
	if rest := len(r.b) - r.off; rest != 0 {
		return fmt.Errorf("%w: %d bytes after %s at offset %d, expected 0", ErrTrailing, rest, what, r.off)
	}
	return nil
}

// StripOEHeader accepts evidence either as a raw quote or as an Open
// Enclave / EGo remote report (16-byte header: uint32 version 1, uint32
// type 2, uint64 size, then the quote) and returns the raw quote.
func StripOEHeader(evidence []byte) ([]byte, error) {
	if len(evidence) < 4 || binary.LittleEndian.Uint32(evidence) != oeReportVersion {
		return evidence, nil
	}
	if len(evidence) < OEHeaderSize {
		return nil, fmt.Errorf("%w: OE report header needs %d bytes, found %d", ErrTruncated, OEHeaderSize, len(evidence))
	}
	if typ := binary.LittleEndian.Uint32(evidence[4:]); typ != oeReportTypeRemote {
		return nil, fmt.Errorf("%w: OE report type: expected %d (SGX remote), found %d", ErrMalformed, oeReportTypeRemote, typ)
	}
	size := binary.LittleEndian.Uint64(evidence[8:])
	rest := uint64(len(evidence) - OEHeaderSize) //nolint:gosec // G115: len(evidence) >= OEHeaderSize was checked above
	if size > rest {
		return nil, fmt.Errorf("%w: OE report size field is %d, only %d bytes follow the header", ErrTruncated, size, rest)
	}
	if size < rest {
		return nil, fmt.Errorf("%w: OE report size field is %d, but %d bytes follow the header", ErrTrailing, size, rest)
	}
	return evidence[OEHeaderSize:], nil
}

// ParseEvidence parses a raw quote or an OE remote report holding one.
func ParseEvidence(evidence []byte) (*Quote, error) {
	raw, err := StripOEHeader(evidence)
	if err != nil {
		return nil, err
	}
	return ParseQuote(raw)
}

// ParseQuote parses a raw ECDSA quote of version 3, 4 or 5. Every length is
// bounds-checked, and bytes after the signature data are rejected.
func ParseQuote(b []byte) (*Quote, error) {
	r := &reader{b: b}
	hb, err := r.take("header", HeaderSize)
	if err != nil {
		return nil, err
	}
	q := &Quote{}
	h := &q.Header
	h.Version = binary.LittleEndian.Uint16(hb[0:])
	h.AttestationKeyType = binary.LittleEndian.Uint16(hb[2:])
	h.TEEType = binary.LittleEndian.Uint32(hb[4:])
	h.QESVN = binary.LittleEndian.Uint16(hb[8:])
	h.PCESVN = binary.LittleEndian.Uint16(hb[10:])
	copy(h.QEVendorID[:], hb[12:28])
	copy(h.UserData[:], hb[28:48])
	if h.AttestationKeyType != AttestationKeyECDSAP256 {
		return nil, fmt.Errorf("%w: header attestation key type: expected %d (ECDSA P-256), found %d", ErrMalformed, AttestationKeyECDSAP256, h.AttestationKeyType)
	}

	var bodySize int
	switch h.Version {
	case 3:
		if h.TEEType != 0 {
			return nil, fmt.Errorf("%w: v3 header reserved field at offset 4: expected 0, found %#x", ErrMalformed, h.TEEType)
		}
		q.BodyType, bodySize = BodyTypeSGX, ReportBodySize
	case 4:
		switch h.TEEType {
		case TEETypeSGX:
			q.BodyType, bodySize = BodyTypeSGX, ReportBodySize
		case TEETypeTDX:
			q.BodyType, bodySize = BodyTypeTD10, TDReport10Size
		default:
			return nil, fmt.Errorf("%w: header TEE type: expected %#x (SGX) or %#x (TDX), found %#x", ErrMalformed, TEETypeSGX, TEETypeTDX, h.TEEType)
		}
	case 5:
		if q.BodyType, err = r.u16("body descriptor type"); err != nil {
			return nil, err
		}
		size, err := r.u32("body descriptor size")
		if err != nil {
			return nil, err
		}
		want := map[uint16]int{BodyTypeSGX: ReportBodySize, BodyTypeTD10: TDReport10Size, BodyTypeTD15: TDReport15Size}[q.BodyType]
		if want == 0 {
			return nil, fmt.Errorf("%w: body descriptor type: expected 1, 2 or 3, found %d", ErrMalformed, q.BodyType)
		}
		if int64(size) != int64(want) {
			return nil, fmt.Errorf("%w: body descriptor size for type %d: expected %d, found %d", ErrMalformed, q.BodyType, want, size)
		}
		bodySize = want
		if (q.BodyType == BodyTypeSGX) != (h.TEEType == TEETypeSGX) {
			return nil, fmt.Errorf("%w: body descriptor type %d does not match header TEE type %#x", ErrMalformed, q.BodyType, h.TEEType)
		}
	default:
		return nil, fmt.Errorf("%w: header version: expected 3, 4 or 5, found %d", ErrMalformed, h.Version)
	}
	if q.Body, err = r.take("report body", bodySize); err != nil {
		return nil, err
	}
	if q.BodyType == BodyTypeSGX {
		q.Report = parseReportBody(q.Body)
	}
	q.Signed = b[:r.off:r.off]

	sigLen, err := r.u32("signature data length")
	if err != nil {
		return nil, err
	}
	sigStart := r.off
	if uint64(sigLen) > uint64(len(b)-sigStart) { //nolint:gosec // G115: r.off never exceeds len(b), so the difference is not negative
		return nil, fmt.Errorf("%w: signature data length field is %d, only %d bytes remain at offset %d", ErrTruncated, sigLen, len(b)-sigStart, sigStart)
	}
	sr := &reader{b: b[:sigStart+int(sigLen)], off: sigStart}
	if err := parseSignatureData(q, sr); err != nil {
		return nil, err
	}
	if err := sr.end("certification data (inside signature data length)"); err != nil {
		return nil, err
	}
	r.off = sr.off
	if err := r.end("signature data"); err != nil {
		return nil, err
	}
	return q, nil
}

func parseSignatureData(q *Quote, r *reader) error {
	sig, err := r.take("ISV quote signature", SignatureSize)
	if err != nil {
		return err
	}
	copy(q.Signature[:], sig)
	key, err := r.take("attestation key", PublicKeySize)
	if err != nil {
		return err
	}
	copy(q.AttestationKey[:], key)

	inner := r
	if q.Header.Version >= 4 {
		typ, err := r.u16("outer certification data type")
		if err != nil {
			return err
		}
		if typ != CertDataQEReport {
			return fmt.Errorf("%w: outer certification data type: expected %d (QE report), found %d", ErrMalformed, CertDataQEReport, typ)
		}
		size, err := r.u32("outer certification data size")
		if err != nil {
			return err
		}
		if uint64(size) > uint64(len(r.b)-r.off) { //nolint:gosec // G115: r.off never exceeds len(r.b)
			return fmt.Errorf("%w: outer certification data size is %d, only %d bytes remain at offset %d", ErrTruncated, size, len(r.b)-r.off, r.off)
		}
		inner = &reader{b: r.b[:r.off+int(size)], off: r.off}
	}

	qe, err := inner.take("QE report", ReportBodySize)
	if err != nil {
		return err
	}
	q.QEReport = *parseReportBody(qe)
	qeSig, err := inner.take("QE report signature", SignatureSize)
	if err != nil {
		return err
	}
	copy(q.QEReportSignature[:], qeSig)
	authSize, err := inner.u16("QE auth data size")
	if err != nil {
		return err
	}
	if q.QEAuthData, err = inner.take("QE auth data", int(authSize)); err != nil {
		return err
	}
	if q.CertDataType, err = inner.u16("certification data type"); err != nil {
		return err
	}
	certSize, err := inner.u32("certification data size")
	if err != nil {
		return err
	}
	if uint64(certSize) > uint64(len(inner.b)-inner.off) { //nolint:gosec // G115: inner.off never exceeds len(inner.b)
		return fmt.Errorf("%w: certification data size field is %d, only %d bytes remain at offset %d", ErrTruncated, certSize, len(inner.b)-inner.off, inner.off)
	}
	if q.CertData, err = inner.take("certification data", int(certSize)); err != nil {
		return err
	}
	if inner != r {
		if err := inner.end("inner certification data (inside outer certification data size)"); err != nil {
			return err
		}
		r.off = inner.off
	}
	return nil
}

func parseReportBody(b []byte) *ReportBody {
	rb := &ReportBody{Raw: b}
	copy(rb.CPUSVN[:], b[0:16])
	rb.MiscSelect = binary.LittleEndian.Uint32(b[16:])
	copy(rb.ISVExtProdID[:], b[32:48])
	copy(rb.Attributes[:], b[48:64])
	copy(rb.MREnclave[:], b[64:96])
	copy(rb.MRSigner[:], b[128:160])
	copy(rb.ConfigID[:], b[192:256])
	rb.ISVProdID = binary.LittleEndian.Uint16(b[256:])
	rb.ISVSVN = binary.LittleEndian.Uint16(b[258:])
	rb.ConfigSVN = binary.LittleEndian.Uint16(b[260:])
	copy(rb.ISVFamilyID[:], b[304:320])
	copy(rb.ReportData[:], b[reportDataStart:384])
	return rb
}

// PCKChainPEM returns the PEM certificate chain of certification data type 5
// with a trailing NUL removed.
func (q *Quote) PCKChainPEM() ([]byte, error) {
	if q.CertDataType != CertDataPCKChain {
		return nil, fmt.Errorf("%w: certification data type: expected %d (PCK certificate chain), found %d", ErrMalformed, CertDataPCKChain, q.CertDataType)
	}
	return bytes.TrimRight(q.CertData, "\x00"), nil
}
