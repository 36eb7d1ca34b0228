package sgx

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
)

// ErrFetch is wrapped by errors about fetching collateral over HTTP.
var ErrFetch = errors.New("collateral fetch failed")

// IntelPCSURL is the base URL of Intel's Provisioning Certification Service.
const IntelPCSURL = "https://api.trustedservices.intel.com"

// IntelRootCACRLURL is where Intel publishes the SGX Root CA CRL.
const IntelRootCACRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// maxResponseSize bounds every collateral response body.
const maxResponseSize = 1 << 20

// PCSOptions configure a PCSClient.
type PCSOptions struct {
	// HTTPClient defaults to a client with a 30-second timeout.
	HTTPClient *http.Client
	// RootCACRLURL defaults to IntelRootCACRLURL for Intel's PCS and to
	// BaseURL + "/sgx/certification/v4/rootcacrl" for any other base URL
	// (a PCCS).
	RootCACRLURL string
	// TTL is how long fetched collateral is reused; default one hour. The
	// verifier checks validity windows independently.
	TTL time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// PCSClient is a CollateralProvider that fetches collateral from Intel's
// PCS or a PCCS (same v4 API) and caches it per FMSPC and PCK CA.
type PCSClient struct {
	base     string
	rootCRL  string
	http     *http.Client
	ttl      time.Duration
	now      func() time.Time
	mu       sync.Mutex
	entries  map[string]pcsEntry
	inflight map[string]*sync.Mutex
}

type pcsEntry struct {
	c       *Collateral
	fetched time.Time
}

// NewPCSClient returns a client for the PCS or PCCS at baseURL.
func NewPCSClient(baseURL string, opts PCSOptions) (*PCSClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: base URL: expected an absolute http(s) URL, found %q", ErrFetch, baseURL)
	}
	base := strings.TrimRight(baseURL, "/")
	c := &PCSClient{base: base, rootCRL: opts.RootCACRLURL, http: opts.HTTPClient, ttl: opts.TTL, now: opts.Now,
		entries: make(map[string]pcsEntry), inflight: make(map[string]*sync.Mutex)}
	if c.rootCRL == "" {
		c.rootCRL = base + "/sgx/certification/v4/rootcacrl"
		if base == IntelPCSURL {
			c.rootCRL = IntelRootCACRLURL
		}
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	if c.ttl <= 0 {
		c.ttl = time.Hour
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Collateral returns cached collateral for req, fetching it when absent or
// older than the TTL.
func (c *PCSClient) Collateral(ctx context.Context, req CollateralRequest) (*Collateral, error) {
	if len(req.FMSPC) != 6 {
		return nil, fmt.Errorf("%w: FMSPC: expected 6 bytes, found %d", ErrFetch, len(req.FMSPC))
	}
	if req.CA != "processor" && req.CA != "platform" {
		return nil, fmt.Errorf("%w: CA: expected processor or platform, found %q", ErrFetch, req.CA)
	}
	key := hex.EncodeToString(req.FMSPC) + "/" + req.CA

	c.mu.Lock()
	lock, ok := c.inflight[key]
	if !ok {
		lock = &sync.Mutex{}
		c.inflight[key] = lock
	}
	c.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()

	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && c.now().Sub(e.fetched) < c.ttl {
		return e.c, nil
	}
	col, err := c.fetch(ctx, req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.entries[key] = pcsEntry{c: col, fetched: c.now()}
	c.mu.Unlock()
	return col, nil
}

func (c *PCSClient) get(ctx context.Context, what, u, chainHeader string) (body, chain []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrFetch, what, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: GET %s: %w (%w)", ErrFetch, what, u, err, attestation.ErrUnavailable)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: reading GET %s: %w (%w)", ErrFetch, what, u, err, attestation.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		snippet := string(body[:min(len(body), 200)])
		err := fmt.Errorf("%w: %s: GET %s: expected status 200, found %d (%q)", ErrFetch, what, u, resp.StatusCode, snippet)
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			err = fmt.Errorf("%w (%w)", err, attestation.ErrUnavailable)
		}
		return nil, nil, err
	}
	if len(body) > maxResponseSize {
		return nil, nil, fmt.Errorf("%w: %s: GET %s: expected at most %d bytes, found more", ErrFetch, what, u, maxResponseSize)
	}
	if chainHeader != "" {
		h := resp.Header.Get(chainHeader)
		if h == "" {
			return nil, nil, fmt.Errorf("%w: %s: GET %s: expected header %s, found none", ErrFetch, what, u, chainHeader)
		}
		s, err := url.QueryUnescape(h)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: header %s: %w", ErrFetch, what, chainHeader, err)
		}
		chain = []byte(s)
	}
	return body, chain, nil
}

// signedObject splits a PCS JSON response into the exact bytes of the
// signed object under key and its hex signature.
func signedObject(what, key string, body []byte) (obj, sig []byte, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: %s response: %w", ErrFetch, what, err)
	}
	raw, ok := m[key]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s response: expected key %q, found keys %v", ErrFetch, what, key, mapKeys(m))
	}
	var s string
	if err := json.Unmarshal(m["signature"], &s); err != nil {
		return nil, nil, fmt.Errorf("%w: %s response signature: expected a hex string: %w", ErrFetch, what, err)
	}
	if sig, err = hex.DecodeString(s); err != nil {
		return nil, nil, fmt.Errorf("%w: %s response signature: %w", ErrFetch, what, err)
	}
	return []byte(raw), sig, nil
}

func mapKeys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// crlBytes accepts a CRL as DER, PEM or hex-encoded DER.
func crlBytes(what string, b []byte) ([]byte, error) {
	t := bytes.TrimSpace(b)
	if blk, _ := pem.Decode(t); blk != nil {
		return blk.Bytes, nil
	}
	if len(t) > 0 && t[0] == 0x30 {
		return b, nil
	}
	der, err := hex.DecodeString(string(t))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: expected DER, PEM or hex, found %d undecodable bytes", ErrFetch, what, len(b))
	}
	return der, nil
}

func (c *PCSClient) fetch(ctx context.Context, req CollateralRequest) (*Collateral, error) {
	col := &Collateral{}
	fmspc := strings.ToUpper(hex.EncodeToString(req.FMSPC))
	body, chain, err := c.get(ctx, "TCB Info", c.base+"/sgx/certification/v4/tcb?fmspc="+fmspc, "TCB-Info-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	if col.TCBInfo, col.TCBInfoSignature, err = signedObject("TCB Info", "tcbInfo", body); err != nil {
		return nil, err
	}
	col.TCBInfoIssuerChain = chain

	body, chain, err = c.get(ctx, "QE Identity", c.base+"/sgx/certification/v4/qe/identity", "SGX-Enclave-Identity-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	if col.QEIdentity, col.QEIdentitySignature, err = signedObject("QE Identity", "enclaveIdentity", body); err != nil {
		return nil, err
	}
	col.QEIdentityIssuerChain = chain

	body, chain, err = c.get(ctx, "PCK CRL", c.base+"/sgx/certification/v4/pckcrl?ca="+req.CA+"&encoding=der", "SGX-PCK-CRL-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	if col.PCKCRL, err = crlBytes("PCK CRL", body); err != nil {
		return nil, err
	}
	col.PCKCRLIssuerChain = chain

	body, _, err = c.get(ctx, "Root CA CRL", c.rootCRL, "")
	if err != nil {
		return nil, err
	}
	if col.RootCACRL, err = crlBytes("Root CA CRL", body); err != nil {
		return nil, err
	}
	return col, nil
}
