package marble

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

func TestActivateRequest(t *testing.T) {
	want := &rpc.Parameters{
		Files: map[string][]byte{"/secret": []byte("s")},
		Env:   map[string][]byte{"A": []byte("b")},
		Argv:  []string{"prog", "x"},
	}
	coord := startFakeCoordinator(t, answer(want))
	cfg := testConfig(t, coord.addr)
	cfg.DNSNames = []string{"backend", "backend.default", "10.9.8.7"}

	got, err := Activate(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetFiles()["/secret"]) != "s" || string(got.GetEnv()["A"]) != "b" || !slices.Equal(got.GetArgv(), want.Argv) {
		t.Fatalf("parameters = %v, want %v", got, want)
	}

	calls := coord.received()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	req, peerCert := calls[0].req, calls[0].peer
	if req.GetMarbleType() != "backend" {
		t.Fatalf("marble type = %q", req.GetMarbleType())
	}
	stored, err := os.ReadFile(cfg.UUIDFile)
	if err != nil {
		t.Fatal(err)
	}
	if req.GetUUID() != string(stored) || len(req.GetUUID()) != 36 {
		t.Fatalf("UUID = %q, file holds %q", req.GetUUID(), stored)
	}
	if len(req.GetQuote()) != 0 {
		t.Fatalf("simulation sent %d bytes of evidence, want none", len(req.GetQuote()))
	}
	if peerCert == nil {
		t.Fatal("no client certificate on the activation connection")
	}

	csr, err := x509.ParseCertificateRequest(req.GetCSR())
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	if !csr.PublicKey.(*ecdsa.PublicKey).Equal(peerCert.PublicKey) {
		t.Fatal("CSR key differs from the key of the presented certificate")
	}
	for _, names := range [][]string{csr.DNSNames, peerCert.DNSNames} {
		if !slices.Equal(names, []string{"backend", "backend.default"}) {
			t.Fatalf("DNS names = %v", names)
		}
	}
	for _, ips := range [][]net.IP{csr.IPAddresses, peerCert.IPAddresses} {
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if !slices.Equal(got, []string{"127.0.0.1", "::1", "10.9.8.7"}) {
			t.Fatalf("IP addresses = %v", got)
		}
	}
	if peerCert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatal("default key is not P-256")
	}
	if err := peerCert.CheckSignature(peerCert.SignatureAlgorithm, peerCert.RawTBSCertificate, peerCert.Signature); err != nil {
		t.Fatalf("presented certificate is not self-signed: %v", err)
	}
}

func TestActivateEvidenceBindsCertificate(t *testing.T) {
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{}))
	issuer := &recordingIssuer{evidence: []byte("hardware evidence")}
	cfg := testConfig(t, coord.addr)
	cfg.Issuer = issuer
	cfg.Curve = elliptic.P384()

	if _, err := Activate(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	calls := coord.received()
	if len(calls) != 1 || len(issuer.got) != 1 {
		t.Fatalf("%d calls, %d evidence requests; want 1 each", len(calls), len(issuer.got))
	}
	if !bytes.Equal(calls[0].req.GetQuote(), issuer.evidence) {
		t.Fatalf("quote = %q, want the issuer's evidence", calls[0].req.GetQuote())
	}
	if issuer.got[0] != attestation.BindHash(calls[0].peer.Raw) {
		t.Fatal("evidence is not bound to SHA-256 of the presented certificate")
	}
	if calls[0].peer.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P384() {
		t.Fatal("Config.Curve not used")
	}
}

func TestActivateReusesUUID(t *testing.T) {
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{}))
	cfg := testConfig(t, coord.addr)
	for range 2 {
		if _, err := Activate(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	calls := coord.received()
	if len(calls) != 2 || calls[0].req.GetUUID() != calls[1].req.GetUUID() {
		t.Fatalf("UUIDs differ across activations: %v", calls)
	}
	if bytes.Equal(calls[0].peer.Raw, calls[1].peer.Raw) {
		t.Fatal("the same certificate was used for two activations")
	}
}

func TestActivatePodUIDFile(t *testing.T) {
	const podUID = "0b7c3c9e-5b0d-4f4e-9a55-2d8d8f0e1a22"
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{}))
	cfg := testConfig(t, coord.addr)
	if err := os.WriteFile(cfg.UUIDFile, []byte(podUID+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := Activate(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := coord.received()[0].req.GetUUID(); got != podUID {
		t.Fatalf("UUID = %q, want the Pod UID %q", got, podUID)
	}
}

func TestActivateWithoutIssuer(t *testing.T) {
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{}))
	cfg := testConfig(t, coord.addr)
	cfg.Issuer = nil
	_, err := Activate(t.Context(), cfg)
	if !errors.Is(err, ErrNoIssuer) {
		t.Fatalf("err = %v, want ErrNoIssuer", err)
	}
	if !strings.Contains(err.Error(), "OE_SIMULATION=1") || !strings.Contains(err.Error(), "insecure") {
		t.Fatalf("error %q does not tell how to run without attestation", err)
	}
	if n := len(coord.received()); n != 0 {
		t.Fatalf("the Coordinator was contacted %d times", n)
	}
	if _, statErr := os.Stat(cfg.UUIDFile); statErr == nil {
		t.Fatal("a UUID file was created although activation could not start")
	}
}

func TestActivateRejected(t *testing.T) {
	for _, code := range []codes.Code{
		codes.PermissionDenied, codes.InvalidArgument, codes.ResourceExhausted,
		codes.Unauthenticated, codes.Internal, codes.Unimplemented,
	} {
		t.Run(code.String(), func(t *testing.T) {
			reason := "unknown marble type requested: " + code.String()
			coord := startFakeCoordinator(t, func(int, *rpc.ActivationReq) (*rpc.ActivationResp, error) {
				return nil, status.Error(code, reason)
			})
			_, err := Activate(t.Context(), testConfig(t, coord.addr))
			var rej *RejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("err = %v (%T), want *RejectedError", err, err)
			}
			if rej.Code != code || rej.Reason != reason || rej.Addr != coord.addr {
				t.Fatalf("rejection = %+v", rej)
			}
			if !strings.Contains(err.Error(), reason) || !strings.Contains(err.Error(), coord.addr) {
				t.Fatalf("error %q lacks reason or address", err)
			}
			if n := len(coord.received()); n != 1 {
				t.Fatalf("%d calls, want exactly 1 (no retry)", n)
			}
		})
	}
}

func TestActivateRetriesUntilReady(t *testing.T) {
	coord := startFakeCoordinator(t, func(n int, _ *rpc.ActivationReq) (*rpc.ActivationResp, error) {
		switch n {
		case 1, 2:
			return nil, status.Error(codes.FailedPrecondition, "cannot accept marbles in current state")
		case 3:
			return nil, status.Error(codes.Unavailable, "restarting")
		}
		return &rpc.ActivationResp{Parameters: &rpc.Parameters{Argv: []string{"ok"}}}, nil
	})
	params, err := Activate(t.Context(), testConfig(t, coord.addr))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(params.GetArgv(), []string{"ok"}) {
		t.Fatalf("argv = %v", params.GetArgv())
	}
	calls := coord.received()
	if len(calls) != 4 {
		t.Fatalf("%d calls, want 4", len(calls))
	}
	if calls[0].req.GetUUID() != calls[3].req.GetUUID() {
		t.Fatal("UUID changed between attempts")
	}
}

func TestActivateNotReadyTimesOut(t *testing.T) {
	const reason = "cannot accept marbles in current state"
	coord := startFakeCoordinator(t, func(int, *rpc.ActivationReq) (*rpc.ActivationResp, error) {
		return nil, status.Error(codes.FailedPrecondition, reason)
	})
	cfg := testConfig(t, coord.addr)
	cfg.RetryTimeout = time.Second
	start := time.Now()
	_, err := Activate(t.Context(), cfg)
	var un *UnavailableError
	if !errors.As(err, &un) {
		t.Fatalf("err = %v, want *UnavailableError", err)
	}
	if !strings.Contains(err.Error(), "not ready") || !strings.Contains(err.Error(), reason) || !strings.Contains(err.Error(), coord.addr) {
		t.Fatalf("error %q does not explain", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("took %v for a 1s retry period", elapsed)
	}
	if n := len(coord.received()); n < 2 || n != un.Attempts {
		t.Fatalf("%d calls, error says %d attempts", n, un.Attempts)
	}
}

func TestActivateUnreachable(t *testing.T) {
	addr := testsupport.FreeAddr(t)
	cfg := testConfig(t, addr)
	cfg.RetryTimeout = 700 * time.Millisecond
	cfg.RetryBackoff = 50 * time.Millisecond
	start := time.Now()
	_, err := Activate(t.Context(), cfg)
	elapsed := time.Since(start)
	var un *UnavailableError
	if !errors.As(err, &un) {
		t.Fatalf("err = %v, want *UnavailableError", err)
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "could not be reached") {
		t.Fatalf("error %q does not name the address", err)
	}
	if un.Attempts < 3 {
		t.Fatalf("%d attempts, want several with backoff", un.Attempts)
	}
	if elapsed < 500*time.Millisecond || elapsed > 5*time.Second {
		t.Fatalf("gave up after %v, want about 700ms", elapsed)
	}
	if status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Fatalf("last error = %v, want Unavailable", errors.Unwrap(err))
	}
}

func TestActivateLateCoordinator(t *testing.T) {
	addr := testsupport.FreeAddr(t)
	cfg := testConfig(t, addr)
	cfg.RetryTimeout = 10 * time.Second
	type result struct {
		params *rpc.Parameters
		err    error
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		p, err := Activate(ctx, cfg)
		done <- result{p, err}
	}()
	time.Sleep(300 * time.Millisecond)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		<-done
		t.Skipf("the reserved port was taken by another process: %v", err)
	}
	coord := serveFakeCoordinator(t, lis, answer(&rpc.Parameters{Argv: []string{"late"}}))
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !slices.Equal(res.params.GetArgv(), []string{"late"}) {
		t.Fatalf("argv = %v", res.params.GetArgv())
	}
	if n := len(coord.received()); n != 1 {
		t.Fatalf("%d calls reached the Coordinator, want 1", n)
	}
}

func TestActivateCancelled(t *testing.T) {
	cfg := testConfig(t, testsupport.FreeAddr(t))
	cfg.RetryTimeout = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := Activate(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's error", err)
	}
	if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), cfg.CoordinatorAddr) {
		t.Fatalf("err = %v, want the address and the last attempt's failure", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("cancellation took %v", elapsed)
	}
}

func TestActivateInvalidConfig(t *testing.T) {
	cfg := testConfig(t, "no-port")
	if _, err := Activate(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("err = %v", err)
	}
}

func TestActivateLogsNoSecrets(t *testing.T) {
	const secret = "TOP-SECRET-VALUE"
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{
		Env:   map[string][]byte{"KEY": []byte(secret)},
		Files: map[string][]byte{"/k": []byte(secret)},
	}))
	var logs bytes.Buffer
	cfg := testConfig(t, coord.addr)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, err := Activate(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if logs.Len() == 0 {
		t.Fatal("activation logged nothing")
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("a secret reached the log:\n%s", logs.String())
	}
}

func TestActivateByHostName(t *testing.T) {
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{}))
	_, port, err := net.SplitHostPort(coord.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Activate(t.Context(), testConfig(t, net.JoinHostPort("localhost", port))); err != nil {
		t.Fatalf("activation via localhost: %v", err)
	}
	if n := len(coord.received()); n != 1 {
		t.Fatalf("%d calls", n)
	}
}
