package manifest

import (
	"encoding/json"
	"fmt"
	"net"
)

// ttlsEndpoint is one entry of MARBLE_TTLS_CONFIG.
type ttlsEndpoint struct {
	CACert     string `json:"cacrt"`
	ClientCert string `json:"clicrt"`
	ClientKey  string `json:"clikey"`
}

type ttlsIncoming struct {
	ttlsEndpoint
	ClientAuth bool `json:"clientAuth"`
}

type ttlsDocument struct {
	TLS struct {
		Outgoing map[string]ttlsEndpoint
		Incoming map[string]ttlsIncoming
	} `json:"tls"`
}

// TTLSConfig returns the MARBLE_TTLS_CONFIG value for a marble of
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
	var doc ttlsDocument
	doc.TLS.Outgoing = make(map[string]ttlsEndpoint)
	doc.TLS.Incoming = make(map[string]ttlsIncoming)
	own := ttlsEndpoint{CACert: marbleRootPEM, ClientCert: certPEM, ClientKey: keyPEM}
	for _, tagName := range marble.TLS {
		tag, ok := m.TLS[tagName]
		if !ok {
			return nil, fmt.Errorf("TLS config: TLS tag %q is not defined", tagName)
		}
		for _, e := range tag.Outgoing {
			doc.TLS.Outgoing[net.JoinHostPort(e.Addr, e.Port)] = own
		}
		for _, e := range tag.Incoming {
			entry := ttlsIncoming{ttlsEndpoint: own, ClientAuth: !e.DisableClientAuth}
			if e.Cert != "" {
				s, ok := secrets[e.Cert]
				if !ok || len(s.Cert.Raw) == 0 || len(s.Private) == 0 {
					return nil, fmt.Errorf("TLS config: incoming port %s: secret %q has no certificate and key", e.Port, e.Cert)
				}
				entry.ClientCert = string(pemBlock("CERTIFICATE", s.Cert.Raw))
				entry.ClientKey = string(pemBlock("PRIVATE KEY", s.Private))
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
