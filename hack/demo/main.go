// Command demo runs the whole mesh on this machine: a Coordinator in
// simulation mode, the sample manifest, and the two sample marbles talking
// mTLS with certificates the Coordinator issued. Run it from the
// repository with `make demo` or `go run ./hack/demo`. It needs only Go.
//
// Everything listens on 127.0.0.1 and lives in a temporary folder; all
// processes are stopped when the demo ends, fails or is interrupted.
package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/marblemesh/marblemesh/test/testsupport"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	con := &console{w: os.Stdout}
	err := run(ctx, con)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err != nil && interrupted:
		con.say("interrupted; everything the demo started has been stopped")
		os.Exit(130)
	case err != nil:
		con.say("FAILED: %v", err)
		os.Exit(1)
	}
}

// console serialises the demo's lines and the marbles' output.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) say(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "demo: "+format+"\n", args...)
}

func (c *console) line(prefix, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "  %-6s| %s\n", prefix, text)
}

// prefixWriter forwards complete lines to the console under a prefix.
type prefixWriter struct {
	con    *console
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.con.line(p.prefix, strings.TrimRight(string(p.buf[:i]), "\r"))
		p.buf = p.buf[i+1:]
	}
}

// process is a child process the demo started.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end, then kills it after a grace period.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// demo holds what must be cleaned up.
type demo struct {
	con   *console
	tmp   string
	bin   string
	procs []*process
}

// start runs a program; its output goes to a log file when logFile is
// set, otherwise to the console under the process name.
func (d *demo) start(name, dir string, env []string, logFile string, argv ...string) (*process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	var closeLog func()
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			return nil, fmt.Errorf("creating log of %s: %w", name, err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		p.log = logFile
		closeLog = func() { _ = f.Close() }
	} else {
		w := &prefixWriter{con: d.con, prefix: name}
		cmd.Stdout, cmd.Stderr = w, w
		closeLog = func() {}
	}
	if err := cmd.Start(); err != nil {
		closeLog()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	d.procs = append(d.procs, p)
	go func() {
		p.err = cmd.Wait()
		closeLog()
		close(p.done)
	}()
	return p, nil
}

// stopAll stops every process, last started first.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		if !p.exited() {
			d.con.say("stopping %s (pid %d)", p.name, p.cmd.Process.Pid)
		}
		p.stop()
	}
}

// showLog prints the end of a process log, for failures.
func (d *demo) showLog(p *process) {
	if p.log == "" {
		return
	}
	data, err := os.ReadFile(p.log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	d.con.say("last lines of the %s log:", p.name)
	for _, l := range lines {
		d.con.line(p.name, l)
	}
}

func run(ctx context.Context, con *console) (err error) {
	repo, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "marblemesh-demo-")
	if err != nil {
		return fmt.Errorf("creating a temporary folder: %w", err)
	}
	d := &demo{con: con, tmp: tmp, bin: filepath.Join(tmp, "bin")}
	defer func() {
		d.stopAll()
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("removing %s: %w", tmp, rerr)
		}
		con.say("removed %s", tmp)
	}()

	con.say("building cmd/coordinator, cmd/premain, samples/server and samples/client into %s", d.bin)
	start := time.Now()
	if err := goBuild(ctx, repo, d.bin, "./cmd/coordinator", "./cmd/premain", "./samples/server", "./samples/client"); err != nil {
		return err
	}
	con.say("built in %s", time.Since(start).Round(100*time.Millisecond))

	addrs, err := testsupport.PickAddrs(3)
	if err != nil {
		return err
	}
	meshAddr, clientAddr, serverAddr := addrs[0], addrs[1], addrs[2]

	sealDir := filepath.Join(tmp, "coordinator-seal")
	coordEnv := append(baseEnv(),
		"OE_SIMULATION=1",
		"EDG_COORDINATOR_SEAL_DIR="+sealDir,
		"EDG_COORDINATOR_MESH_ADDR="+meshAddr,
		"EDG_COORDINATOR_CLIENT_ADDR="+clientAddr,
		"EDG_COORDINATOR_DNS_NAMES=localhost",
	)
	con.say("starting the Coordinator in SIMULATION mode (OE_SIMULATION=1): mesh API %s, client API %s, seal folder %s", meshAddr, clientAddr, sealDir)
	coord, err := d.start("coord", tmp, coordEnv, filepath.Join(tmp, "coordinator.log"), filepath.Join(d.bin, "coordinator"))
	if err != nil {
		return err
	}
	fail := func(err error) error {
		if ctx.Err() == nil {
			d.showLog(coord)
		}
		return err
	}

	con.say("waiting for the Coordinator's quote and certificate chain (api.VerifyCoordinator); its certificate is not trusted yet")
	att, err := verifyCoordinator(ctx, coord, clientAddr, 60*time.Second)
	if err != nil {
		return fail(err)
	}
	con.say("api.VerifyCoordinator: root %q, intermediate %q", att.Root.Subject.String(), att.Intermediate.Subject.String())
	if att.Simulation() {
		con.say("SIMULATION: the quote is empty, so nothing proves what code the Coordinator runs; the root is trusted on first use, NOT verified")
	} else {
		con.say("the quote has %d bytes; this demo does NOT verify it (the CLI does), it only pins the root", len(att.Quote))
	}
	root := att.Root
	con.say("pinned the root certificate: every further client API call must chain to it")

	st, err := api.Status(ctx, clientAddr, root)
	if err != nil {
		return fail(err)
	}
	if st.Code != api.StateAcceptingManifest {
		return fail(fmt.Errorf("the Coordinator's status is %d (%s), want %d", st.Code, st.Message, api.StateAcceptingManifest))
	}
	con.say("Coordinator status %d: %s", st.Code, st.Message)

	manifestPath := filepath.Join(repo, "samples", "manifest.json")
	manifest, err := os.ReadFile(manifestPath)
	if err != nil {
		return fail(fmt.Errorf("reading the manifest: %w", err))
	}
	if _, err := api.ManifestSet(ctx, clientAddr, root, manifest); err != nil {
		return fail(fmt.Errorf("setting the manifest: %w", err))
	}
	con.say("api.ManifestSet: set samples/manifest.json (SHA-256 %s)", api.ManifestFingerprint(manifest))
	st, err = api.Status(ctx, clientAddr, root)
	if err != nil {
		return fail(err)
	}
	if st.Code != api.StateAcceptingMarbles {
		return fail(fmt.Errorf("status after setting the manifest is %d (%s), want %d", st.Code, st.Message, api.StateAcceptingMarbles))
	}
	con.say("Coordinator status %d: %s", st.Code, st.Message)

	marbleEnv := func(marbleType, dir string) []string {
		return marbleEnv(marbleType, dir, meshAddr, serverAddr)
	}
	serverDir, clientDir := filepath.Join(tmp, "server"), filepath.Join(tmp, "client")
	for _, dir := range []string{serverDir, clientDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}

	con.say("starting marble sample-server (activates itself with marble.PreMain), HTTPS on %s", serverAddr)
	server, err := d.start("server", serverDir, marbleEnv("sample-server", serverDir), "",
		filepath.Join(d.bin, "server"), "-listen", serverAddr)
	if err != nil {
		return fail(err)
	}
	refused, err := waitRefusesAnonymous(ctx, server, serverAddr, root, 90*time.Second)
	if err != nil {
		return fail(err)
	}
	con.say("a TLS client that trusts the pinned root but has no mesh certificate is refused by sample-server: %s", refused)

	con.say("running marble sample-client under premain (its arguments come from the manifest's Argv)")
	client, err := d.start("client", clientDir, marbleEnv("sample-client", clientDir), "",
		filepath.Join(d.bin, "premain"), "--", filepath.Join(d.bin, "client"))
	if err != nil {
		return fail(err)
	}
	select {
	case <-client.done:
	case <-time.After(120 * time.Second):
		return fail(errors.New("sample-client did not finish within 120 s"))
	case <-ctx.Done():
		return ctx.Err()
	}
	if client.err != nil {
		return fail(fmt.Errorf("sample-client failed: %w", client.err))
	}
	con.say("sample-client exited 0: the marbles talked mTLS with certificates issued by the Coordinator")

	st, err = api.Status(ctx, clientAddr, root)
	if err != nil {
		return fail(err)
	}
	con.say("Coordinator status %d: %s", st.Code, st.Message)
	con.say("Coordinator root certificate SHA-256 fingerprint: %s", api.Fingerprint(root))
	con.say("done; stopping everything")
	return nil
}

// marbleEnv is the environment of a sample marble in the demo: the mesh's
// settings on top of baseEnv, and JSON log lines like the Coordinator's.
func marbleEnv(marbleType, dir, meshAddr, serverAddr string) []string {
	return append(baseEnv(),
		"OE_SIMULATION=1",
		marbleenv.MarbleType+"="+marbleType,
		marbleenv.CoordinatorAddr+"="+meshAddr,
		marbleenv.DNSNames+"=localhost",
		marbleenv.UUIDFile+"="+filepath.Join(dir, "uuid"),
		marbleenv.LogFormat+"="+logging.FormatJSON,
		"SAMPLE_SERVER_ADDR="+serverAddr,
	)
}

// baseEnv is this process's environment without the mesh's own settings
// (EDG_*, OE_*), so that only the demo's values apply.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EDG_") && !strings.HasPrefix(kv, "OE_") {
			env = append(env, kv)
		}
	}
	return env
}

// moduleRoot returns the folder of the repository's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("running go env GOMOD (is Go installed and in PATH?): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the repository: run the demo from the repository with `make demo`")
	}
	return filepath.Dir(gomod), nil
}

func goBuild(ctx context.Context, root, outDir string, pkgs ...string) error {
	args := append([]string{"build", "-o", outDir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// verifyCoordinator waits until the Coordinator serves its quote and returns
// what api.VerifyCoordinator found. The demo's Coordinator runs in
// simulation and has no quote to check, so verification is skipped: the
// root is trusted on first use. Against a real enclave, pass the expected
// identity (api.VerifyOptions with UniqueID or SignerID and a Verifier).
func verifyCoordinator(ctx context.Context, p *process, endpoint string, timeout time.Duration) (*api.Attestation, error) {
	deadline := time.Now().Add(timeout)
	for {
		att, err := api.VerifyCoordinator(ctx, endpoint, api.VerifyOptions{InsecureSkipVerify: true})
		if err == nil {
			return att, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("the %s process exited (%v) before serving its quote", p.name, p.err) //nolint:errorlint // the exit status is reported, not matched
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no quote from the Coordinator within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitRefusesAnonymous waits until the sample server accepts connections
// and checks that it turns away a client that trusts the pinned root
// (api.ClientTLSConfig: the server's certificate must chain to it) but
// presents no certificate. It returns the error that client saw.
func waitRefusesAnonymous(ctx context.Context, p *process, addr string, root *x509.Certificate, timeout time.Duration) (string, error) {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: time.Second}).DialContext,
			TLSClientConfig:   api.ClientTLSConfig(root, nil),
			DisableKeepAlives: true,
		},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		status, err := getMAC(ctx, client, addr)
		var opErr *net.OpError
		switch {
		case err == nil:
			return "", fmt.Errorf("sample-server answered a client without certificate: %s", status)
		case ctx.Err() != nil:
			return "", ctx.Err()
		case errors.Is(err, api.ErrUntrustedCertificate):
			return "", fmt.Errorf("sample-server on %s: %w", addr, err)
		case errors.As(err, &opErr) && opErr.Op == "dial":
			// Not listening yet.
		default:
			return err.Error(), nil
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited (%v) before listening on %s", p.name, p.err, addr) //nolint:errorlint // the exit status is reported, not matched
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not listen on %s within %s", p.name, addr, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// getMAC asks the sample server for a MAC and returns the answer's status,
// or the error that ended the request without the URL around it.
func getMAC(ctx context.Context, client *http.Client, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/mac?message=x", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return "", err
	}
	_ = resp.Body.Close()
	return resp.Status, nil
}
