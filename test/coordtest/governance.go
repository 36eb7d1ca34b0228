package coordtest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
	"github.com/marblemesh/marblemesh/rpc"
)

// WithSealer seals the data key with s instead of the simulation sealer.
// Restarting on the same seal folder with a sealer of another key imitates
// a move to another machine: the Coordinator enters recovery.
func WithSealer(s seal.Sealer) Option {
	return func(c *coordinator.Config) { c.Sealer = s }
}

// NewAESSealer returns a sealer with a random key, standing for one
// machine's sealing key.
func NewAESSealer(t testing.TB) seal.Sealer {
	t.Helper()
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return seal.AESGCMSealer{Key: key}
}

// Response is a decoded JSend answer.
type Response struct {
	Code    int
	Status  string          `json:"status"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
}

// Do sends a request to the client API, presenting certs as client
// certificates, and decodes the JSend answer.
func (c *Coordinator) Do(t testing.TB, method, path string, body []byte, certs ...tls.Certificate) Response {
	t.Helper()
	req, err := http.NewRequest(method, c.URL(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	client := c.Client(certs...)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading answer: %v", method, path, err)
	}
	out := Response{Code: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	return out
}

// MarbleTLS returns the client certificate an activated marble received:
// its certificate chain and private key.
func MarbleTLS(p *rpc.Parameters) (tls.Certificate, error) {
	chain, key := p.GetEnv()[marbleenv.CertificateChain], p.GetEnv()[marbleenv.PrivateKey]
	if len(chain) == 0 || len(key) == 0 {
		return tls.Certificate{}, errors.New("the parameters lack the marble certificate or key")
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("marble certificate: %w", err)
	}
	return cert, nil
}
