package manifest

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/marblemesh/marblemesh/marble/ttlsconfig"
)

// TTLSConfig returns the MARBLE_TTLS_CONFIG value (a ttlsconfig.Document) for a marble of
// marbleType, or nil when the marble carries no TLS tags. Outgoing entries
// are keyed "<addr>:<port>", incoming ones "*:<port>"; all trust
// marbleRootPEM and present the marble's certificate (certPEM, keyPEM),
// except incoming entries with Cert, which present that secret (taken from
// secrets) and do not ask for client certificates.
func (m *Manifest) TTLSConfig(marbleType string, marbleRootPEM, certPEM, keyPEM string, secrets map[string]Secret) ([]byte, error) {
	marble, ok := m.Marbles[marbleType]
	if !ok {
		return nil, fmt.Errorf("TLS config: marble type %q is not defined", marbleType)
	}
	if len(marble.TLS) == 0 {
		return nil, nil
	}
	doc := ttlsconfig.Document{TLS: &ttlsconfig.Rules{
		Outgoing: make(map[string]ttlsconfig.Endpoint),
		Incoming: make(map[string]ttlsconfig.Incoming),
	}}
	own := ttlsconfig.Endpoint{CACert: marbleRootPEM, Cert: certPEM, Key: keyPEM}
	for _, tagName := range marble.TLS {
		tag, ok := m.TLS[tagName]
		if !ok {
			return nil, fmt.Errorf("TLS config: TLS tag %q is not defined", tagName)
		}
		for _, e := range tag.Outgoing {
			doc.TLS.Outgoing[net.JoinHostPort(e.Addr, e.Port)] = own
		}
		for _, e := range tag.Incoming {
			entry := ttlsconfig.Incoming{Endpoint: own, ClientAuth: !e.DisableClientAuth}
			if e.Cert != "" {
				s, ok := secrets[e.Cert]
				if !ok || len(s.Cert.Raw) == 0 || len(s.Private) == 0 {
					return nil, fmt.Errorf("TLS config: incoming port %s: secret %q has no certificate and key", e.Port, e.Cert)
				}
				entry.Cert = string(pemBlock("CERTIFICATE", s.Cert.Raw))
				entry.Key = string(pemBlock("PRIVATE KEY", s.Private))
				entry.ClientAuth = false
			}
			key := "*:" + e.Port
			if prev, dup := doc.TLS.Incoming[key]; dup && prev != entry {
				return nil, fmt.Errorf("TLS config: conflicting entries for incoming %s", key)
			}
			doc.TLS.Incoming[key] = entry
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("TLS config: encoding: %w", err)
	}
	return out, nil
}

// TTLSMarbles returns, sorted, the marble types that carry TLS tags, whose
// activations receive MARBLE_TTLS_CONFIG.
func (m *Manifest) TTLSMarbles() []string {
	var names []string
	for _, name := range sortedKeys(m.Marbles) {
		if len(m.Marbles[name].TLS) > 0 {
			names = append(names, name)
		}
	}
	return names
}

// TTLSNote says where the TLS rules of the marble types that carry TLS tags
// take effect, naming those types; it is empty when no marble carries one.
// Nothing intercepts a marble's sockets: the rules are applied only by Go
// services that listen and dial through the marble package.
func (m *Manifest) TTLSNote() string {
	names := m.TTLSMarbles()
	if len(names) == 0 {
		return ""
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf("marble(s) %s carry TLS tags. Their TLS rules (MARBLE_TTLS_CONFIG) take effect only in Go services "+
		"that listen and dial through the marble package (marble.TransparentTLSFromEnv: Listen, DialContext, HTTPTransport). "+
		"Programs run under premain get no transparent TLS: their connections stay plain. For those, configure TLS in the "+
		"program from the MARBLE_PREDEFINED_* variables or from files templated with the marble's certificate",
		strings.Join(quoted, ", "))
}
