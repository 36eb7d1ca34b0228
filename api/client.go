package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/marblemesh/marblemesh/api/wire"
)

// maxResponseSize bounds what is read from the Coordinator: a manifest may
// be 16 MiB, base64 inflates it by a third.
const maxResponseSize = 64 << 20

// client talks to one Coordinator endpoint.
type client struct {
	base string
	http *http.Client
	// peer records the leaf certificate of the last TLS handshake.
	peer *peerRecorder
}

type peerRecorder struct {
	mu   sync.Mutex
	leaf *x509.Certificate
}

func (p *peerRecorder) set(c *x509.Certificate) {
	p.mu.Lock()
	p.leaf = c
	p.mu.Unlock()
}

func (p *peerRecorder) get() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaf
}

// baseURL turns HOST:PORT (optionally prefixed with https://) into the
// Coordinator's base URL.
func baseURL(endpoint string) (string, error) {
	e := strings.TrimSuffix(strings.TrimSpace(endpoint), "/")
	if rest, ok := strings.CutPrefix(e, "https://"); ok {
		e = rest
	} else if strings.Contains(e, "://") {
		return "", fmt.Errorf("%w %q: the client API is HTTPS; give HOST:PORT, e.g. localhost:4433", ErrInvalidAddress, endpoint)
	}
	host, port, err := net.SplitHostPort(e)
	if err != nil || host == "" {
		return "", fmt.Errorf("%w %q: want HOST:PORT, e.g. localhost:4433", ErrInvalidAddress, endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%w %q: the port must be a number from 1 to 65535", ErrInvalidAddress, endpoint)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// newClient returns a client that only accepts a server whose certificate
// chains to trustedRoot and presents clientCert when it is not nil.
// Without trustedRoot the server is not authenticated at all: only
// VerifyCoordinator does that, to fetch the quote that proves who the
// server is.
func newClient(endpoint string, trustedRoot *x509.Certificate, clientCert *tls.Certificate) (*client, error) {
	base, err := baseURL(endpoint)
	if err != nil {
		return nil, err
	}
	peer := &peerRecorder{}
	cfg := tlsConfig(clientCert, func(chain []*x509.Certificate) error {
		peer.set(chain[0])
		if trustedRoot == nil {
			return nil
		}
		return verifyPeer(chain, trustedRoot)
	})
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
	}
	return &client{base: base, http: &http.Client{Transport: transport}, peer: peer}, nil
}

// ClientTLSConfig returns the TLS configuration with which this package
// talks to the Coordinator, for a program's own connections: it accepts
// only a server whose certificate chains to trustedRoot, whatever host
// name was dialled, and presents clientCert when the server asks for a
// certificate and clientCert is not nil (otherwise none). A server that
// does not chain to trustedRoot fails the handshake with an error wrapping
// ErrUntrustedCertificate; with a nil trustedRoot every server does.
//
// Marbles' certificates chain to the Coordinator's root as well, through
// its intermediate, so the configuration also lets a client outside the
// mesh authenticate a marble by the attested root. Whether the marble
// admits the client is the marble's decision: one that serves only the
// mesh wants a marble certificate as clientCert.
func ClientTLSConfig(trustedRoot *x509.Certificate, clientCert *tls.Certificate) *tls.Config {
	return tlsConfig(clientCert, func(chain []*x509.Certificate) error {
		if trustedRoot == nil {
			return fmt.Errorf("%w: %w", ErrUntrustedCertificate, errNoTrustedRoot)
		}
		return verifyPeer(chain, trustedRoot)
	})
}

// tlsConfig returns a configuration that presents clientCert, if not nil,
// and accepts a server when verify accepts the chain it presented (never
// empty). Host names are not checked.
func tlsConfig(clientCert *tls.Certificate, verify func(chain []*x509.Certificate) error) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done in VerifyConnection: the peer must chain to
		// the attested root, whatever host name was dialled.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: the server presented no certificate", ErrUntrustedCertificate)
			}
			return verify(cs.PeerCertificates)
		},
	}
	if clientCert != nil {
		cc := clientCert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cc, nil }
	}
	return cfg
}

// verifyPeer checks that the presented chain leads to root.
func verifyPeer(chain []*x509.Certificate, root *x509.Certificate) error {
	leaf := chain[0]
	if leaf.Equal(root) {
		return nil
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return &UntrustedCertificateError{Presented: leaf, Trusted: root, Err: err}
	}
	return nil
}

// UntrustedCertificateError says that the Coordinator presented a
// certificate that does not chain to the trusted root.
type UntrustedCertificateError struct {
	Presented, Trusted *x509.Certificate
	Err                error
}

func (e *UntrustedCertificateError) Error() string {
	return fmt.Sprintf("%v (presented %q, SHA-256 %s; trusted root SHA-256 %s)",
		ErrUntrustedCertificate, e.Presented.Subject.CommonName, Fingerprint(e.Presented), Fingerprint(e.Trusted))
}

// Unwrap returns ErrUntrustedCertificate and the verification error.
func (e *UntrustedCertificateError) Unwrap() []error { return []error{ErrUntrustedCertificate, e.Err} }

func (c *client) close() { c.http.CloseIdleConnections() }

// request describes one API call.
type request struct {
	method string
	// path is relative, e.g. "manifest"; v2 adds /api/v2/, v1 adds /.
	path  string
	query url.Values
	// v2Body is encoded as JSON; nil sends no body.
	v2Body any
	// v1Body is the legacy body, sent as is; nil sends no body.
	v1Body []byte
	// v2Only disables the fallback to the legacy path.
	v2Only bool
}

// response is the data member of a successful JSend answer.
type response struct {
	data json.RawMessage
	// legacy is true when the answer came from the v1 path.
	legacy bool
}

// do sends r to the v2 path and, if that answers 405, to the v1 path.
func (c *client) do(ctx context.Context, r request) (response, error) {
	var body []byte
	if r.v2Body != nil {
		b, err := json.Marshal(r.v2Body)
		if err != nil {
			return response{}, fmt.Errorf("encoding request: %w", err)
		}
		body = b
	}
	data, err := c.send(ctx, r.method, "/api/v2/"+r.path, r.query, body)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusMethodNotAllowed {
		return response{data: data}, err
	}
	if r.v2Only {
		return response{}, fmt.Errorf("%w: it has no %s /api/v2/%s endpoint; it may be an older version: %w", ErrUnsupported, r.method, r.path, err)
	}
	data, err = c.send(ctx, r.method, "/"+r.path, r.query, r.v1Body)
	return response{data: data, legacy: true}, err
}

func (c *client) send(ctx context.Context, method, path string, query url.Values, body []byte) (json.RawMessage, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("building request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(raw) > maxResponseSize {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, maxResponseSize)
	}
	var env wire.Reply
	jsonErr := json.Unmarshal(raw, &env)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{StatusCode: resp.StatusCode, Method: method, Path: path, Message: env.Message}
		if jsonErr != nil || (env.Message == "" && env.Status == "") {
			e.Message = snippet(raw)
		}
		return nil, e
	}
	if jsonErr != nil {
		return nil, fmt.Errorf("%s %s: the answer is not JSON (%q): is this a Coordinator?", method, path, snippet(raw))
	}
	if env.Status != wire.StatusSuccess {
		return nil, fmt.Errorf("%s %s: unexpected answer status %q: %s", method, path, env.Status, env.Message)
	}
	return env.Data, nil
}

// unwrapURLError drops *url.Error's method and URL, which the caller
// states itself, keeping the cause in the chain.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// snippet returns at most 200 printable characters of a body for an
// error message.
func snippet(raw []byte) string {
	s := strings.TrimSpace(string(raw))
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// decode unmarshals a JSend data member.
func decode(data json.RawMessage, what string, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding the Coordinator's %s: %w", what, err)
	}
	return nil
}

// errNoTrustedRoot says that a call that needs an authenticated Coordinator
// was given no root.
var errNoTrustedRoot = errors.New("no trusted root certificate: verify the Coordinator with VerifyCoordinator first")

// newTrustedClient is newClient for calls that need an authenticated
// Coordinator: trustedRoot must be set.
func newTrustedClient(endpoint string, trustedRoot *x509.Certificate, clientCert *tls.Certificate) (*client, error) {
	if trustedRoot == nil {
		return nil, errNoTrustedRoot
	}
	return newClient(endpoint, trustedRoot, clientCert)
}
