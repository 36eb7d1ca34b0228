package marble

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/marblemesh/marblemesh/marble/ttlsconfig"
)

// EnvTransparentTLS holds the marble's transparent-TLS rules (JSON, see
// package ttlsconfig). The Coordinator sets it only for marbles with TLS
// tags in the manifest.
const EnvTransparentTLS = ttlsconfig.EnvName

// TransparentTLS applies the TLS rules of the manifest to a marble's own
// listeners and connections: what MarbleRun's EGo runtime does by
// intercepting sockets, a Go service does by listening and dialling
// through these methods.
//
//   - Listen and WrapListener serve TLS on a TCP port with an Incoming rule
//     ("*:<port>"), presenting the rule's certificate and, when the rule has
//     clientAuth, requiring a client certificate that chains to the rule's
//     CA (the Marble root). Other ports stay plain TCP.
//   - DialContext speaks TLS to a TCP address with an Outgoing rule,
//     presenting the rule's certificate and accepting only a server whose
//     certificate chains to the rule's CA and names the dialled host. Other
//     addresses are dialled plain.
//   - HTTPTransport makes http:// requests to such addresses travel over
//     that TLS, so that the program keeps its http:// URLs.
//
// Outgoing rules match the address as the program dials it: the host
// exactly as written (case-insensitive; IP addresses in any spelling) and
// the port. A name is not resolved to find a rule, so dialling the IP
// address of a listed name is plain. An Outgoing rule with host "*" matches
// every host on its port; an exact rule takes precedence.
//
// The zero value has no rules. A TransparentTLS is safe for concurrent use.
type TransparentTLS struct {
	incoming map[int]*incomingRule
	outgoing map[string]*outgoingRule // by normalized host:port; host "*" matches any
}

type incomingRule struct {
	key    string
	config *tls.Config
}

type outgoingRule struct {
	key   string
	roots *x509.CertPool
	cert  tls.Certificate
}

// TransparentTLSFromEnv reads the rules from MARBLE_TTLS_CONFIG through
// getenv (os.Getenv after activation). When the variable is not set but
// the marble is activated (MARBLE_PREDEFINED_ROOT_CA is set), the manifest
// gives the marble no TLS tags and the result has no rules: every
// connection is plain, as in MarbleRun. When neither is set, it fails: the
// process is not an activated marble.
func TransparentTLSFromEnv(getenv func(string) string) (*TransparentTLS, error) {
	data := getenv(EnvTransparentTLS)
	if strings.TrimSpace(data) == "" {
		if strings.TrimSpace(getenv(EnvRootCA)) == "" {
			return nil, fmt.Errorf("neither %s nor %s is set: is this process a marble activated by the Coordinator?", EnvTransparentTLS, EnvRootCA)
		}
		return &TransparentTLS{}, nil
	}
	return ParseTransparentTLS([]byte(data))
}

// ParseTransparentTLS decodes and checks a MARBLE_TTLS_CONFIG value. It
// fails on unknown fields, on keys that are not <host>:<port> (Incoming:
// *:<port>) with a port from 1 to 65535, on two keys for the same endpoint,
// and on certificates, keys and CAs that do not load; the error names the
// rule.
func ParseTransparentTLS(data []byte) (*TransparentTLS, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc ttlsconfig.Document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s is not a valid configuration: %w", EnvTransparentTLS, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s is not a valid configuration: data after the JSON object", EnvTransparentTLS)
	}
	if doc.TLS == nil {
		return nil, fmt.Errorf(`%s is not a valid configuration: it has no "tls" object`, EnvTransparentTLS)
	}
	t := &TransparentTLS{
		incoming: make(map[int]*incomingRule, len(doc.TLS.Incoming)),
		outgoing: make(map[string]*outgoingRule, len(doc.TLS.Outgoing)),
	}
	for _, key := range sortedKeys(doc.TLS.Outgoing) {
		norm, r, err := parseOutgoing(key, doc.TLS.Outgoing[key])
		if err != nil {
			return nil, fmt.Errorf("%s: outgoing rule %q: %w", EnvTransparentTLS, key, err)
		}
		if prev, dup := t.outgoing[norm]; dup {
			return nil, fmt.Errorf("%s: outgoing rules %q and %q name the same endpoint", EnvTransparentTLS, prev.key, key)
		}
		t.outgoing[norm] = r
	}
	for _, key := range sortedKeys(doc.TLS.Incoming) {
		port, r, err := parseIncoming(key, doc.TLS.Incoming[key])
		if err != nil {
			return nil, fmt.Errorf("%s: incoming rule %q: %w", EnvTransparentTLS, key, err)
		}
		if prev, dup := t.incoming[port]; dup {
			return nil, fmt.Errorf("%s: incoming rules %q and %q name the same port", EnvTransparentTLS, prev.key, key)
		}
		t.incoming[port] = r
	}
	return t, nil
}

// parseOutgoing checks one Outgoing rule and returns it with its
// normalized endpoint.
func parseOutgoing(key string, e ttlsconfig.Endpoint) (string, *outgoingRule, error) {
	host, portStr, err := net.SplitHostPort(key)
	if err != nil {
		return "", nil, fmt.Errorf("the key is not <addr>:<port>: %w", err)
	}
	if host == "" {
		return "", nil, errors.New("the key has no host")
	}
	port, err := parsePort(portStr)
	if err != nil {
		return "", nil, err
	}
	roots, err := parseCAs(e.CACert)
	if err != nil {
		return "", nil, err
	}
	cert, err := parseKeyPair(e)
	if err != nil {
		return "", nil, err
	}
	return endpointKey(normalizeHost(host), port), &outgoingRule{key: key, roots: roots, cert: cert}, nil
}

// parseIncoming checks one Incoming rule and returns its port.
func parseIncoming(key string, e ttlsconfig.Incoming) (int, *incomingRule, error) {
	host, portStr, err := net.SplitHostPort(key)
	if err != nil {
		return 0, nil, fmt.Errorf("the key is not *:<port>: %w", err)
	}
	if host != "*" {
		return 0, nil, fmt.Errorf("the key's host is %q; incoming rules apply to every local address and are written *:<port>", host)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return 0, nil, err
	}
	cert, err := parseKeyPair(e.Endpoint)
	if err != nil {
		return 0, nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.NoClientCert,
	}
	if e.ClientAuth || strings.TrimSpace(e.CACert) != "" {
		roots, err := parseCAs(e.CACert)
		if err != nil {
			return 0, nil, err
		}
		if e.ClientAuth {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = roots
		}
	}
	return port, &incomingRule{key: key, config: cfg}, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return int(n), nil
}

// parseCAs loads the PEM certificates of cacrt; there must be at least one
// and nothing else.
func parseCAs(data string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(data)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("cacrt holds a PEM block of type %q, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cacrt: %w", err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("cacrt holds no PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("cacrt holds data that is not PEM after its certificates")
	}
	return pool, nil
}

func parseKeyPair(e ttlsconfig.Endpoint) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair([]byte(e.Cert), []byte(e.Key))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("clicrt and clikey: %w", err)
	}
	return cert, nil
}

// normalizeHost spells a host as rules are matched: IP addresses in their
// canonical form, names in lower case without a trailing dot.
func normalizeHost(host string) string {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

func endpointKey(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func isTCP(network string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return true
	}
	return false
}

// Endpoints returns, sorted, the keys of the incoming and outgoing rules
// as the Coordinator wrote them.
func (t *TransparentTLS) Endpoints() (incoming, outgoing []string) {
	for _, r := range t.incoming {
		incoming = append(incoming, r.key)
	}
	for _, r := range t.outgoing {
		outgoing = append(outgoing, r.key)
	}
	slices.Sort(incoming)
	slices.Sort(outgoing)
	return incoming, outgoing
}

// Listen listens on addr like net.ListenConfig.Listen and applies the
// Incoming rule of the port it is bound to (see WrapListener).
func (t *TransparentTLS) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return t.WrapListener(l), nil
}

// WrapListener applies the Incoming rule of l's TCP port: the connections
// it accepts are *tls.Conn that present the rule's certificate (and verify
// the client's, with clientAuth). Without a rule for the port, or when l is
// not a TCP listener, l is returned as it is.
func (t *TransparentTLS) WrapListener(l net.Listener) net.Listener {
	a, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return l
	}
	r, ok := t.incoming[a.Port]
	if !ok {
		return l
	}
	return tls.NewListener(l, r.config.Clone())
}

// outgoingFor returns the rule for addr, the host to verify, and whether
// there is one. A port given by service name is resolved first.
func (t *TransparentTLS) outgoingFor(ctx context.Context, network, addr string) (*outgoingRule, string, error) {
	if !isTCP(network) || len(t.outgoing) == 0 {
		return nil, "", nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		// The dialler reports the malformed address.
		return nil, "", nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		if port, err = net.DefaultResolver.LookupPort(ctx, network, portStr); err != nil {
			return nil, "", fmt.Errorf("looking up port %q of %s: %w", portStr, addr, err)
		}
	}
	host = normalizeHost(host)
	if r, ok := t.outgoing[endpointKey(host, port)]; ok {
		return r, host, nil
	}
	if r, ok := t.outgoing[endpointKey("*", port)]; ok {
		return r, host, nil
	}
	return nil, "", nil
}

func (r *outgoingRule) clientConfig(host string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{r.cert},
		RootCAs:      r.roots,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}
}

// DialContext dials addr like net.Dialer.DialContext and, when an Outgoing
// rule matches it, completes a TLS handshake before it returns the
// connection (a *tls.Conn). The error of a failed handshake names the
// rule.
func (t *TransparentTLS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r, host, err := t.outgoingFor(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if r == nil {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return r.dial(ctx, network, addr, host)
}

func (r *outgoingRule) dial(ctx context.Context, network, addr, host string) (net.Conn, error) {
	d := tls.Dialer{Config: r.clientConfig(host)}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("transparent TLS to %s (outgoing rule %q): %w", addr, r.key, err)
	}
	return conn, nil
}

// HTTPTransport returns a transport whose connections go through
// DialContext: an http:// request to an address with an Outgoing rule
// travels over TLS with the marble's credentials. An https:// request to
// such an address uses the same connection (there is no second TLS layer);
// one to any other address uses TLSClientConfig as usual (the system
// roots when it is nil).
//
// The transport uses no proxy, whatever HTTP_PROXY says: through a proxy,
// the connection would go to the proxy's address instead and no rule
// would apply. Set Proxy only for addresses that are not in the rules.
func (t *TransparentTLS) HTTPTransport() *http.Transport {
	tr := &http.Transport{
		DialContext:           t.DialContext,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		r, host, err := t.outgoingFor(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if r != nil {
			return r.dial(ctx, network, addr, host)
		}
		// With DialTLSContext set, the transport applies neither
		// TLSClientConfig nor TLSHandshakeTimeout itself.
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if tr.TLSClientConfig != nil {
			cfg = tr.TLSClientConfig.Clone()
		}
		if cfg.ServerName == "" {
			h, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dialling %s: %w", addr, err)
			}
			cfg.ServerName = h
		}
		if tr.TLSHandshakeTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, tr.TLSHandshakeTimeout)
			defer cancel()
		}
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, network, addr)
	}
	return tr
}
