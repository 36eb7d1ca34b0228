package sgx

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrCollateral is wrapped by errors about malformed or unusable collateral.
var ErrCollateral = errors.New("DCAP collateral")

// Collateral is the verification material for one platform (FMSPC) and PCK
// CA. TCBInfo and QEIdentity are the exact signed bytes of the inner JSON
// objects; their signatures are raw r‖s (64 bytes).
type Collateral struct {
	TCBInfo               []byte
	TCBInfoSignature      []byte
	TCBInfoIssuerChain    []byte // PEM: TCB signing certificate, then root
	QEIdentity            []byte
	QEIdentitySignature   []byte
	QEIdentityIssuerChain []byte // PEM: TCB signing certificate, then root
	PCKCRL                []byte // DER
	PCKCRLIssuerChain     []byte // PEM: PCK CA, then root
	RootCACRL             []byte // DER
}

// CollateralRequest names the collateral a quote needs.
type CollateralRequest struct {
	// FMSPC is the platform's FMSPC from its PCK certificate.
	FMSPC []byte
	// CA is "processor" or "platform", after the PCK certificate's issuer.
	CA string
}

// CollateralProvider returns collateral for a platform.
type CollateralProvider interface {
	Collateral(ctx context.Context, req CollateralRequest) (*Collateral, error)
}

// StaticProvider serves fixed collateral, for offline verification. It
// returns its collateral for every request; the verifier checks that the
// FMSPC and the PCK CA match.
type StaticProvider struct {
	C *Collateral
}

// Collateral returns the fixed collateral.
func (p StaticProvider) Collateral(context.Context, CollateralRequest) (*Collateral, error) {
	if p.C == nil {
		return nil, fmt.Errorf("%w: static provider has no collateral", ErrCollateral)
	}
	return p.C, nil
}

// collateralFile is the JSON layout of a collateral bundle: the signed JSON
// objects as strings, signatures as hex, chains as PEM and CRLs as hex DER
// (PEM is accepted too).
type collateralFile struct {
	TCBInfo               *string `json:"tcb_info"`
	TCBInfoSignature      *string `json:"tcb_info_signature"`
	TCBInfoIssuerChain    *string `json:"tcb_info_issuer_chain"`
	QEIdentity            *string `json:"qe_identity"`
	QEIdentitySignature   *string `json:"qe_identity_signature"`
	QEIdentityIssuerChain *string `json:"qe_identity_issuer_chain"`
	PCKCRL                *string `json:"pck_crl"`
	PCKCRLIssuerChain     *string `json:"pck_crl_issuer_chain"`
	RootCACRL             *string `json:"root_ca_crl"`
}

// ParseCollateralJSON reads a collateral bundle with the keys tcb_info,
// tcb_info_signature, tcb_info_issuer_chain, qe_identity,
// qe_identity_signature, qe_identity_issuer_chain, pck_crl,
// pck_crl_issuer_chain and root_ca_crl. All keys are required; other keys
// are ignored.
func ParseCollateralJSON(data []byte) (*Collateral, error) {
	var f collateralFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: bundle: %w", ErrCollateral, err)
	}
	var c Collateral
	var err error
	req := func(name string, v *string) (string, error) {
		if v == nil {
			return "", fmt.Errorf("%w: bundle key %q: expected a string, found none", ErrCollateral, name)
		}
		return *v, nil
	}
	str := func(name string, v *string, dst *[]byte) {
		if err != nil {
			return
		}
		var s string
		if s, err = req(name, v); err == nil {
			*dst = []byte(s)
		}
	}
	hexField := func(name string, v *string, dst *[]byte) {
		if err != nil {
			return
		}
		var s string
		if s, err = req(name, v); err != nil {
			return
		}
		if *dst, err = hex.DecodeString(strings.TrimSpace(s)); err != nil {
			err = fmt.Errorf("%w: bundle key %q: expected hex: %w", ErrCollateral, name, err)
		}
	}
	crl := func(name string, v *string, dst *[]byte) {
		if err != nil {
			return
		}
		var s string
		if s, err = req(name, v); err != nil {
			return
		}
		if blk, _ := pem.Decode([]byte(s)); blk != nil {
			*dst = blk.Bytes
			return
		}
		if *dst, err = hex.DecodeString(strings.TrimSpace(s)); err != nil {
			err = fmt.Errorf("%w: bundle key %q: expected hex DER or PEM: %w", ErrCollateral, name, err)
		}
	}
	str("tcb_info", f.TCBInfo, &c.TCBInfo)
	hexField("tcb_info_signature", f.TCBInfoSignature, &c.TCBInfoSignature)
	str("tcb_info_issuer_chain", f.TCBInfoIssuerChain, &c.TCBInfoIssuerChain)
	str("qe_identity", f.QEIdentity, &c.QEIdentity)
	hexField("qe_identity_signature", f.QEIdentitySignature, &c.QEIdentitySignature)
	str("qe_identity_issuer_chain", f.QEIdentityIssuerChain, &c.QEIdentityIssuerChain)
	crl("pck_crl", f.PCKCRL, &c.PCKCRL)
	str("pck_crl_issuer_chain", f.PCKCRLIssuerChain, &c.PCKCRLIssuerChain)
	crl("root_ca_crl", f.RootCACRL, &c.RootCACRL)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// HexBytes is a byte string written as hex in JSON.
type HexBytes []byte

// MarshalJSON encodes the bytes as upper-case hex, as Intel's collateral does.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(strings.ToUpper(hex.EncodeToString(h)))
}

// UnmarshalJSON decodes a hex string (either case).
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex value %q: %w", s, err)
	}
	*h = v
	return nil
}

// TCBInfo is version 3 of Intel's SGX TCB Info.
type TCBInfo struct {
	ID                      string     `json:"id"`
	Version                 int        `json:"version"`
	IssueDate               time.Time  `json:"issueDate"`
	NextUpdate              time.Time  `json:"nextUpdate"`
	FMSPC                   HexBytes   `json:"fmspc"`
	PCEID                   HexBytes   `json:"pceId"`
	TCBType                 int        `json:"tcbType"`
	TCBEvaluationDataNumber uint32     `json:"tcbEvaluationDataNumber"`
	TCBLevels               []TCBLevel `json:"tcbLevels"`
}

// TCBLevel is one entry of TCBInfo.TCBLevels.
type TCBLevel struct {
	TCB struct {
		SGXTCBComponents []struct {
			SVN int `json:"svn"`
		} `json:"sgxtcbcomponents"`
		PCESVN int `json:"pcesvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

// EnclaveIdentity is version 2 of Intel's QE Identity.
type EnclaveIdentity struct {
	ID                      string       `json:"id"`
	Version                 int          `json:"version"`
	IssueDate               time.Time    `json:"issueDate"`
	NextUpdate              time.Time    `json:"nextUpdate"`
	TCBEvaluationDataNumber uint32       `json:"tcbEvaluationDataNumber"`
	MiscSelect              HexBytes     `json:"miscselect"`
	MiscSelectMask          HexBytes     `json:"miscselectMask"`
	Attributes              HexBytes     `json:"attributes"`
	AttributesMask          HexBytes     `json:"attributesMask"`
	MRSigner                HexBytes     `json:"mrsigner"`
	ISVProdID               uint16       `json:"isvprodid"`
	TCBLevels               []QETCBLevel `json:"tcbLevels"`
}

// QETCBLevel is one entry of EnclaveIdentity.TCBLevels.
type QETCBLevel struct {
	TCB struct {
		ISVSVN uint16 `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}
