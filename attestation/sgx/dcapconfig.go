package sgx

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"
)

// DefaultQCNLConfPath is where Intel's DCAP quote provider library reads
// its configuration, and where the Helm chart mounts it.
const DefaultQCNLConfPath = "/etc/sgx_default_qcnl.conf"

// CollateralSource says where a DCAP verifier fetches collateral. The zero
// value is Intel's PCS with TLS certificates checked.
type CollateralSource struct {
	// URL is the PCS or PCCS base URL; empty means IntelPCSURL. A
	// trailing /sgx/certification/v3 or /v4 path (as quote provider
	// configurations write it) is removed: the client adds the v4 paths.
	URL string
	// InsecureSkipVerify skips the check of the PCCS's TLS certificate
	// (QCNL use_secure_cert = false, for a PCCS with a self-signed
	// certificate). Collateral stays protected: the verifier checks its
	// signatures up to the trusted SGX root.
	InsecureSkipVerify bool
}

// BaseURL returns the URL the PCS client is given.
func (s CollateralSource) BaseURL() string {
	u := strings.TrimRight(strings.TrimSpace(s.URL), "/")
	if u == "" {
		return IntelPCSURL
	}
	for _, suffix := range []string{"/sgx/certification/v4", "/sgx/certification/v3"} {
		if strings.HasSuffix(u, suffix) {
			return strings.TrimSuffix(u, suffix)
		}
	}
	return u
}

// String describes the source for logs.
func (s CollateralSource) String() string {
	if s.InsecureSkipVerify {
		return s.BaseURL() + " (TLS certificate not checked)"
	}
	return s.BaseURL()
}

// NewDCAPVerifier returns a verifier that fetches collateral from src
// through a caching PCSClient. opts.Root nil trusts the pinned Intel SGX
// Root CA. Nothing is fetched until a quote is verified.
func NewDCAPVerifier(src CollateralSource, opts Options) (*Verifier, error) {
	pcsOpts := PCSOptions{}
	if src.InsecureSkipVerify {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // G402: the operator's use_secure_cert=false; collateral signatures are still verified up to Intel's root
		pcsOpts.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	pcs, err := NewPCSClient(src.BaseURL(), pcsOpts)
	if err != nil {
		return nil, err
	}
	return NewVerifier(pcs, opts)
}

// ReadQCNLConf reads the collateral source from a quote provider (QCNL)
// configuration file: its pccs_url and use_secure_cert keys. A missing
// file, or a file without pccs_url (or with an empty one), selects Intel's
// PCS; use_secure_cert defaults to true and may be a boolean or the string
// "true"/"false" in any case. // and /* */ comments, which Intel's sample
// file carries, are allowed outside strings. Errors name the file.
func ReadQCNLConf(path string) (src CollateralSource, found bool, err error) {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the operator's QCNL configuration file
	if errors.Is(err, fs.ErrNotExist) {
		return CollateralSource{}, false, nil
	}
	if err != nil {
		return CollateralSource{}, false, fmt.Errorf("reading QCNL configuration %s: %w", path, err)
	}
	var f struct {
		PCCSURL       *string         `json:"pccs_url"`
		UseSecureCert json.RawMessage `json:"use_secure_cert"`
	}
	if err := json.Unmarshal(stripJSONComments(raw), &f); err != nil {
		return CollateralSource{}, true, fmt.Errorf("QCNL configuration %s: expected a JSON object: %w", path, err)
	}
	if f.PCCSURL != nil {
		src.URL = *f.PCCSURL
	}
	if len(f.UseSecureCert) != 0 {
		secure, err := parseBoolish(f.UseSecureCert)
		if err != nil {
			return CollateralSource{}, true, fmt.Errorf("QCNL configuration %s: use_secure_cert: %w", path, err)
		}
		src.InsecureSkipVerify = !secure
	}
	if src.URL != "" {
		if _, err := NewPCSClient(src.BaseURL(), PCSOptions{}); err != nil {
			return CollateralSource{}, true, fmt.Errorf("QCNL configuration %s: pccs_url: %w", path, err)
		}
	}
	return src, true, nil
}

func parseBoolish(raw json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, fmt.Errorf("expected true or false, found %s", raw)
}

// stripJSONComments replaces // and /* */ comments outside strings with
// spaces, keeping newlines so that error offsets stay meaningful.
func stripJSONComments(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	inString, escaped := false, false
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for ; i < len(out) && out[i] != '\n'; i++ {
				out[i] = ' '
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			end := i + 2
			for end < len(out) && (out[end-1] != '*' || out[end] != '/' || end-1 < i+2) {
				end++
			}
			for ; i <= end && i < len(out); i++ {
				if out[i] != '\n' {
					out[i] = ' '
				}
			}
			i--
		}
	}
	return out
}
