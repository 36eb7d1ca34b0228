package marble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/rpc"
)

// received is one activation call as the fake Coordinator saw it.
type received struct {
	req  *rpc.ActivationReq
	peer *x509.Certificate
}

// fakeCoordinator serves rpc.Marble over TLS on 127.0.0.1 and answers with
// respond, which gets the 1-based number of the call.
type fakeCoordinator struct {
	rpc.UnimplementedMarbleServer
	addr    string
	respond func(n int, req *rpc.ActivationReq) (*rpc.ActivationResp, error)

	mu    sync.Mutex
	calls []received
}

func (f *fakeCoordinator) Activate(ctx context.Context, req *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	var cert *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			cert = info.State.PeerCertificates[0]
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, received{req: req, peer: cert})
	n := len(f.calls)
	f.mu.Unlock()
	return f.respond(n, req)
}

func (f *fakeCoordinator) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.calls...)
}

// startFakeCoordinator serves on a fresh loopback port.
func startFakeCoordinator(t *testing.T, respond func(n int, req *rpc.ActivationReq) (*rpc.ActivationResp, error)) *fakeCoordinator {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFakeCoordinator(t, lis, respond)
}

func serveFakeCoordinator(t *testing.T, lis net.Listener, respond func(n int, req *rpc.ActivationReq) (*rpc.ActivationResp, error)) *fakeCoordinator {
	t.Helper()
	serverCert := selfSignedTLSCert(t, "fake coordinator")
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS12,
	})))
	f := &fakeCoordinator{addr: lis.Addr().String(), respond: respond}
	rpc.RegisterMarbleServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f
}

// answer returns the same parameters on every call.
func answer(p *rpc.Parameters) func(int, *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	return func(int, *rpc.ActivationReq) (*rpc.ActivationResp, error) {
		return &rpc.ActivationResp{Parameters: p}, nil
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig activates against addr in simulation with a UUID file in a
// temporary folder and short retries.
func testConfig(t *testing.T, addr string) Config {
	return Config{
		MarbleType:      "backend",
		CoordinatorAddr: addr,
		DNSNames:        []string{"localhost"},
		UUIDFile:        t.TempDir() + "/uuid",
		Issuer:          attestation.SimulationIssuer{},
		RetryTimeout:    10 * time.Second,
		RetryBackoff:    20 * time.Millisecond,
		Logger:          testLogger(t),
	}
}

// recordingIssuer returns fixed evidence and remembers the report data it
// was asked to bind.
type recordingIssuer struct {
	evidence []byte
	mu       sync.Mutex
	got      [][attestation.ReportDataSize]byte
}

func (r *recordingIssuer) Issue(_ context.Context, rd [attestation.ReportDataSize]byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rd)
	return r.evidence, nil
}

func (r *recordingIssuer) Insecure() bool { return false }

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serialNumber(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func selfSignedTLSCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testPKI mirrors the Coordinator's certificates: a root, an intermediate
// signed by it, and a self-signed Marble root that shares the
// intermediate's subject and key.
type testPKI struct {
	root, intermediate, marbleRoot *x509.Certificate
	intermediateKey                *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	rootKey, interKey := newKey(t), newKey(t)
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          serialNumber(t),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
	}
	create := func(tmpl, parent *x509.Certificate, pub, priv any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootTmpl := caTmpl(name + " root")
	root := create(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	inter := create(caTmpl(name+" intermediate"), root, &interKey.PublicKey, rootKey)
	marbleRootTmpl := caTmpl(name + " intermediate")
	marbleRoot := create(marbleRootTmpl, marbleRootTmpl, &interKey.PublicKey, interKey)
	return &testPKI{root: root, intermediate: inter, marbleRoot: marbleRoot, intermediateKey: interKey}
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// marbleEnv issues a marble certificate for cn and returns the variables
// an activation would set.
func (p *testPKI) marbleEnv(t testing.TB, cn string) map[string]string {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.marbleRoot, &key.PublicKey, p.intermediateKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return map[string]string{
		EnvRootCA:            pemCert(p.marbleRoot),
		EnvCertificateChain:  leafPEM + pemCert(p.intermediate),
		EnvPrivateKey:        string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
		EnvCoordinatorRootCA: pemCert(p.root),
	}
}

func mapGetenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
