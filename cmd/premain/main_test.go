package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/rpc"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		command []string
		mode    mode
		wantErr bool
	}{
		{args: nil, command: nil},
		{args: []string{"prog", "-x"}, command: []string{"prog", "-x"}},
		{args: []string{"--", "prog", "--help"}, command: []string{"prog", "--help"}},
		{args: []string{"--", "-weird"}, command: []string{"-weird"}},
		{args: []string{"--help"}, mode: modeHelp},
		{args: []string{"-h"}, mode: modeHelp},
		{args: []string{"--version"}, mode: modeVersion},
		{args: []string{"-version", "prog"}, mode: modeVersion},
		{args: []string{"prog", "--version"}, command: []string{"prog", "--version"}},
		{args: []string{"--", "--version"}, command: []string{"--version"}},
		{args: []string{"--verbose", "prog"}, wantErr: true},
		{args: []string{"prog", "--help"}, command: []string{"prog", "--help"}},
	}
	for _, tc := range tests {
		command, m, err := parseArgs(tc.args)
		if (err != nil) != tc.wantErr || m != tc.mode || !slices.Equal(command, tc.command) {
			t.Errorf("parseArgs(%q) = %q, %v, %v; want %q, %v, err %v", tc.args, command, m, err, tc.command, tc.mode, tc.wantErr)
		}
	}
}

func TestProgramPath(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh in PATH")
	}
	tests := []struct {
		command, argv []string
		want          string
		wantErr       string
	}{
		{command: []string{"sh", "-c", "x"}, argv: []string{"other"}, want: sh},
		{command: nil, argv: []string{"sh", "-c"}, want: sh},
		{command: []string{"/bin/sh"}, argv: []string{"sh"}, want: "/bin/sh"},
		{command: nil, argv: nil, wantErr: "no program"},
		{command: []string{""}, argv: nil, wantErr: "empty"},
		{command: []string{"no-such-program-marblemesh"}, wantErr: "not found"},
	}
	for _, tc := range tests {
		got, err := programPath(tc.command, tc.argv)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("programPath(%q, %q) err = %v, want %q", tc.command, tc.argv, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("programPath(%q, %q) = %q, %v; want %q", tc.command, tc.argv, got, err, tc.want)
		}
	}
}

// selfSignedPEM returns a certificate and its key, in PEM.
func selfSignedPEM(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "marble"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
}

// fakeCoordinator answers every activation with respond.
type fakeCoordinator struct {
	rpc.UnimplementedMarbleServer
	respond func(*rpc.ActivationReq) (*rpc.ActivationResp, error)
	mu      sync.Mutex
	reqs    []*rpc.ActivationReq
}

func (f *fakeCoordinator) Activate(_ context.Context, req *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	return f.respond(req)
}

func (f *fakeCoordinator) requests() []*rpc.ActivationReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func startFake(t *testing.T, respond func(*rpc.ActivationReq) (*rpc.ActivationResp, error)) (*fakeCoordinator, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fake coordinator"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS12,
	})))
	f := &fakeCoordinator{respond: respond}
	rpc.RegisterMarbleServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f, lis.Addr().String()
}

type result struct {
	stdout, stderr string
	code           int
	pid            int
}

// runPremain runs the binary in dir with the marble variables for addr
// and extra on top of a minimal environment.
func runPremain(t *testing.T, bin, dir, addr string, extra []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"EDG_MARBLE_TYPE=backend",
		"EDG_MARBLE_COORDINATOR_ADDR=" + addr,
		"EDG_MARBLE_UUID_FILE=" + filepath.Join(dir, "uuid"),
		"OE_SIMULATION=1",
	}, extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running premain: %v", err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code, pid: cmd.Process.Pid}
}

// script prints its process ID, argv[0] and arguments, two variables and
// a file written by premain.
const script = `printf 'pid=%s\n' "$$"; printf 'arg0=%s\n' "$0"; for a in "$@"; do printf 'arg=%s\n' "$a"; done; ` +
	`printf 'keep=%s\n' "$KEEP_ME"; printf 'secret=%s\n' "$SHARED_SECRET"; printf 'file=%s\n' "$(cat conf/app.conf)"`

func TestPremainBinary(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh in PATH")
	}
	bin := filepath.Join(testsupport.GoBuild(t, "github.com/marblemesh/marblemesh/cmd/premain"), "premain")
	params := func(argv []string) func(*rpc.ActivationReq) (*rpc.ActivationResp, error) {
		return func(*rpc.ActivationReq) (*rpc.ActivationResp, error) {
			return &rpc.ActivationResp{Parameters: &rpc.Parameters{
				Files: map[string][]byte{"conf/app.conf": []byte("from-file")},
				Env: map[string][]byte{
					"SHARED_SECRET": []byte("s3cr3t"),
					"KEEP_ME":       []byte("overridden"),
				},
				Argv: argv,
			}}, nil
		}
	}

	check := func(t *testing.T, r result, wantLines ...string) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		want := append([]string{"pid=" + strconv.Itoa(r.pid)}, wantLines...)
		want = append(want, "keep=overridden", "secret=s3cr3t", "file=from-file")
		got := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if !slices.Equal(got, want) {
			t.Fatalf("program printed\n%s\nwant\n%s\nstderr:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), r.stderr)
		}
		if strings.Contains(r.stderr, "s3cr3t") {
			t.Fatal("a secret reached premain's log")
		}
		if strings.Contains(r.stderr, "TLS rules") {
			t.Fatalf("premain warned of TLS rules that the manifest does not give:\n%s", r.stderr)
		}
	}

	t.Run("command line when no Argv", func(t *testing.T) {
		_, addr := startFake(t, params(nil))
		dir := t.TempDir()
		r := runPremain(t, bin, dir, addr, []string{"KEEP_ME=original"}, "--", sh, "-c", script, "given0", "a b", "c")
		check(t, r, "arg0=given0", "arg=a b", "arg=c")
		info, err := os.Stat(filepath.Join(dir, "conf", "app.conf"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("file: %v, %v", info, err)
		}
	})

	t.Run("Argv replaces the arguments", func(t *testing.T) {
		fake, addr := startFake(t, params([]string{"sh", "-c", script, "manifest0", "x"}))
		r := runPremain(t, bin, t.TempDir(), addr, nil, sh, "-c", "echo wrong script", "ignored")
		check(t, r, "arg0=manifest0", "arg=x")
		reqs := fake.requests()
		if len(reqs) != 1 || reqs[0].GetMarbleType() != "backend" || len(reqs[0].GetQuote()) != 0 {
			t.Fatalf("requests = %v", reqs)
		}
	})

	t.Run("Argv alone names the program", func(t *testing.T) {
		_, addr := startFake(t, params([]string{"sh", "-c", script, "only-manifest"}))
		r := runPremain(t, bin, t.TempDir(), addr, nil)
		check(t, r, "arg0=only-manifest")
	})

	t.Run("UUID is kept across runs", func(t *testing.T) {
		fake, addr := startFake(t, params(nil))
		dir := t.TempDir()
		for range 2 {
			if r := runPremain(t, bin, dir, addr, nil, "true"); r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
		}
		reqs := fake.requests()
		if len(reqs) != 2 || reqs[0].GetUUID() != reqs[1].GetUUID() {
			t.Fatalf("requests = %v", reqs)
		}
	})

	t.Run("TLS rules are not applied, and premain says so", func(t *testing.T) {
		certPEM, keyPEM := selfSignedPEM(t)
		rule := map[string]any{"cacrt": certPEM, "clicrt": certPEM, "clikey": keyPEM}
		ttls, err := json.Marshal(map[string]any{"tls": map[string]any{
			"Outgoing": map[string]any{"db:5432": rule},
			"Incoming": map[string]any{"*:8443": map[string]any{"cacrt": certPEM, "clicrt": certPEM, "clikey": keyPEM, "clientAuth": true}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		_, addr := startFake(t, func(*rpc.ActivationReq) (*rpc.ActivationResp, error) {
			return &rpc.ActivationResp{Parameters: &rpc.Parameters{Env: map[string][]byte{"MARBLE_TTLS_CONFIG": ttls}}}, nil
		})
		r := runPremain(t, bin, t.TempDir(), addr, nil, sh, "-c", `printf '%s' "$MARBLE_TTLS_CONFIG"`)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, want := range []string{"level=WARN", "TLS rules", "premain does NOT apply", "connections on these endpoints are plain",
			"MARBLE_PREDEFINED_", "marble.TransparentTLSFromEnv", `incoming=*:8443`, `outgoing=db:5432`} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("premain's log lacks %q:\n%s", want, r.stderr)
			}
		}
		if strings.Contains(r.stderr, "PRIVATE KEY") {
			t.Error("a private key reached premain's log")
		}
		// The rules are passed on, for a program that applies them itself.
		if r.stdout != string(ttls) {
			t.Errorf("the program got MARBLE_TTLS_CONFIG = %q", r.stdout)
		}

		// A configuration that does not parse is still reported.
		_, addr = startFake(t, func(*rpc.ActivationReq) (*rpc.ActivationResp, error) {
			return &rpc.ActivationResp{Parameters: &rpc.Parameters{Env: map[string][]byte{"MARBLE_TTLS_CONFIG": []byte(`{"tls":{"Incoming":{"*:x":{}}}}`)}}}, nil
		})
		r = runPremain(t, bin, t.TempDir(), addr, nil, "true")
		if r.code != 0 || !strings.Contains(r.stderr, "premain does NOT apply") || !strings.Contains(r.stderr, `incoming rule \"*:x\"`) {
			t.Errorf("exit %d, log:\n%s", r.code, r.stderr)
		}
	})

	t.Run("help", func(t *testing.T) {
		r := runPremain(t, bin, t.TempDir(), "127.0.0.1:1", nil, "--help")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		for _, v := range []string{"MARBLE_TTLS_CONFIG", "EDG_MARBLE_TYPE", "EDG_MARBLE_COORDINATOR_ADDR", "EDG_MARBLE_DNS_NAMES", "EDG_MARBLE_UUID_FILE", "OE_SIMULATION=1", "EDG_MARBLE_ATTESTATION_DIR", "/dev/attestation", "Argv[0]"} {
			if !strings.Contains(r.stdout, v) {
				t.Errorf("help does not mention %s", v)
			}
		}
	})

	noTEE := t.TempDir()
	staleGramine := t.TempDir()
	stale := make([]byte, 1020)
	stale[0] = 3
	for name, b := range map[string][]byte{"attestation_type": []byte("dcap"), "user_report_data": make([]byte, 64), "quote": stale} {
		if err := os.WriteFile(filepath.Join(staleGramine, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	failures := []struct {
		name     string
		respond  func(*rpc.ActivationReq) (*rpc.ActivationResp, error)
		env      []string
		args     []string
		wantCode int
		wantErr  string
		contacts int
	}{
		{
			name: "rejected",
			respond: func(*rpc.ActivationReq) (*rpc.ActivationResp, error) {
				return nil, status.Error(codes.PermissionDenied, "unknown marble type requested")
			},
			args:     []string{"true"},
			wantCode: 1, wantErr: "unknown marble type requested", contacts: 1,
		},
		{
			name:     "no simulation",
			env:      []string{"OE_SIMULATION=0", "EDG_MARBLE_ATTESTATION_DIR=" + noTEE},
			args:     []string{"true"},
			wantCode: 1, wantErr: "set OE_SIMULATION=1", contacts: 0,
		},
		{
			name:     "no Gramine quote file",
			env:      []string{"OE_SIMULATION=0", "EDG_MARBLE_ATTESTATION_DIR=" + noTEE},
			args:     []string{"true"},
			wantCode: 1, wantErr: "looked for Gramine's quote file " + filepath.Join(noTEE, "quote"), contacts: 0,
		},
		{
			// The pre-filled quote binds other report data than the
			// marble's fresh certificate: the Gramine issuer was chosen
			// and refuses it before the Coordinator is contacted.
			name:     "Gramine quote for other report data",
			env:      []string{"OE_SIMULATION=0", "EDG_MARBLE_ATTESTATION_DIR=" + staleGramine},
			args:     []string{"true"},
			wantCode: 1, wantErr: "producing attestation evidence: evidence issuance failed: Gramine quote REPORTDATA: expected", contacts: 0,
		},
		{
			name:     "no marble type",
			env:      []string{"EDG_MARBLE_TYPE="},
			args:     []string{"true"},
			wantCode: 1, wantErr: "EDG_MARBLE_TYPE is not set", contacts: 0,
		},
		{
			name:     "program missing",
			args:     []string{"no-such-program-marblemesh"},
			wantCode: 1, wantErr: `program "no-such-program-marblemesh" not found`, contacts: 1,
		},
		{
			name:     "nothing to run",
			wantCode: 1, wantErr: "no program to run", contacts: 1,
		},
		{
			name:     "unknown option",
			args:     []string{"--bogus"},
			wantCode: 2, wantErr: "unknown option", contacts: 0,
		},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			respond := tc.respond
			if respond == nil {
				respond = params(nil)
			}
			fake, addr := startFake(t, respond)
			r := runPremain(t, bin, t.TempDir(), addr, tc.env, tc.args...)
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantErr) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and %q", r.code, r.stderr, tc.wantCode, tc.wantErr)
			}
			if n := len(fake.requests()); n != tc.contacts {
				t.Fatalf("%d activations, want %d", n, tc.contacts)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		_ = lis.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "true")
		cmd.Env = []string{"EDG_MARBLE_TYPE=backend", "EDG_MARBLE_COORDINATOR_ADDR=" + addr,
			"EDG_MARBLE_UUID_FILE=" + filepath.Join(t.TempDir(), "uuid"), "OE_SIMULATION=1"}
		stderr := &testsupport.SyncBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// premain retries for a minute; once it has failed an attempt, an
		// interrupt ends it early with the reason.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(stderr.String(), "retrying") {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("premain did not retry:\n%s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("err = %v, want exit 1; stderr:\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), addr) || !strings.Contains(stderr.String(), "connection refused") {
			t.Fatalf("stderr does not explain:\n%s", stderr.String())
		}
	})
}
