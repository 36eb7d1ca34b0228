package coordinator_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/coordtest"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// These tests run the Coordinator binary, kill it with SIGKILL while it
// applies an update or recovers, and check that what it finds after a
// restart is one consistent state: either before or after the operation,
// never a mixture.

// proc is a Coordinator process.
type proc struct {
	cmd        *exec.Cmd
	out        *testsupport.SyncBuffer
	clientAddr string
	meshAddr   string
	done       chan struct{}
}

// startProc starts the Coordinator on sealDir with loopback listeners and
// waits until it reports its addresses.
func startProc(t *testing.T, bin, sealDir string) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"OE_SIMULATION=1",
		"EDG_COORDINATOR_SEAL_DIR=" + sealDir,
		"EDG_COORDINATOR_CLIENT_ADDR=127.0.0.1:0",
		"EDG_COORDINATOR_MESH_ADDR=127.0.0.1:0",
		"EDG_COORDINATOR_DNS_NAMES=localhost",
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: &testsupport.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan map[string]any, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.out.Write(append(bytes.Clone(line), '\n'))
			var entry map[string]any
			if json.Unmarshal(line, &entry) == nil && entry["msg"] == "Coordinator ready" {
				ready <- entry
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() { p.kill(t) })
	select {
	case entry := <-ready:
		p.clientAddr, _ = entry["clientAPI"].(string)
		p.meshAddr, _ = entry["meshAPI"].(string)
	case <-p.done:
		t.Fatalf("the Coordinator exited before it was ready:\n%s", p.out)
	case <-time.After(60 * time.Second):
		t.Fatalf("the Coordinator did not get ready:\n%s", p.out)
	}
	return p
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	_ = p.cmd.Wait()
}

// do calls the client API. The Coordinator's certificate is not checked:
// consistency checks compare the root it serves instead.
func (p *proc) do(t *testing.T, method, path string, body []byte, certs ...tls.Certificate) coordtest.Response {
	t.Helper()
	r, err := p.try(method, path, body, certs...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, p.out)
	}
	return r
}

func (p *proc) try(method, path string, body []byte, certs ...tls.Certificate) (coordtest.Response, error) {
	client := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // the test compares the served root itself
			Certificates:       certs,
		}},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+p.clientAddr+path, bytes.NewReader(body))
	if err != nil {
		return coordtest.Response{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return coordtest.Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return coordtest.Response{}, err
	}
	out := coordtest.Response{Code: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		return coordtest.Response{}, fmt.Errorf("answer is not JSON: %q", raw)
	}
	return out, nil
}

// killDuring sends a request in the background and kills the process
// after delay, whether or not the request has been answered.
func (p *proc) killDuring(t *testing.T, delay time.Duration, method, path string, body []byte, certs ...tls.Certificate) {
	t.Helper()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_, _ = p.try(method, path, body, certs...)
	}()
	time.Sleep(delay)
	p.kill(t)
	<-sent
}

// observed is what a restarted Coordinator reports.
type observed struct {
	status      int
	root        string
	fingerprint string
	log         []string
	pending     string // fingerprint of the pending update, "" if none
	missing     int
}

func (p *proc) observe(t *testing.T) observed {
	t.Helper()
	var o observed
	var s struct {
		Code int `json:"code"`
	}
	if r := p.do(t, http.MethodGet, "/api/v2/status", nil); json.Unmarshal(r.Data, &s) != nil {
		t.Fatalf("status: %s", r.Data)
	}
	o.status = s.Code
	var q struct {
		Cert string `json:"cert"`
	}
	if r := p.do(t, http.MethodGet, "/api/v2/quote", nil); json.Unmarshal(r.Data, &q) != nil {
		t.Fatalf("quote: %s", r.Data)
	}
	o.root = lastPEM(t, q.Cert)
	if o.status != 3 {
		return o
	}
	var man struct {
		Fingerprint string `json:"manifestFingerprint"`
	}
	if r := p.do(t, http.MethodGet, "/api/v2/manifest", nil); json.Unmarshal(r.Data, &man) != nil {
		t.Fatalf("manifest: %s", r.Data)
	}
	o.fingerprint = man.Fingerprint
	var l struct {
		UpdateLog []string `json:"updateLog"`
	}
	if r := p.do(t, http.MethodGet, "/api/v2/update", nil); json.Unmarshal(r.Data, &l) != nil {
		t.Fatalf("update log: %s", r.Data)
	}
	for _, line := range l.UpdateLog {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		o.log = append(o.log, fmt.Sprint(e["update"], " ", e["manifestFingerprint"]))
	}
	if r := p.do(t, http.MethodGet, "/api/v2/update-manifest", nil); r.Code == http.StatusOK {
		var pu struct {
			Manifest     []byte   `json:"manifest"`
			MissingUsers []string `json:"missingUsers"`
		}
		if json.Unmarshal(r.Data, &pu) != nil {
			t.Fatalf("pending update: %s", r.Data)
		}
		o.pending = fingerprintOf(pu.Manifest)
		o.missing = len(pu.MissingUsers)
	} else if r.Code != http.StatusNotFound {
		t.Fatalf("pending update: %d %s", r.Code, r.Message)
	}
	return o
}

// lastPEM returns the DER of the last certificate in a PEM chain.
func lastPEM(t *testing.T, chain string) string {
	t.Helper()
	var der []byte
	rest := []byte(chain)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		der = b.Bytes
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		t.Fatalf("no certificate in %q", chain)
	}
	return string(der)
}

// activateProc activates an app marble on p and returns its files.
func activateProc(t *testing.T, p *proc) map[string][]byte {
	t.Helper()
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), "app")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := coordtest.Dial(p.meshAddr, id)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params, err := coordtest.Activate(ctx, conn, id, "app", uuidA)
	if err != nil {
		t.Fatalf("activation: %v\n%s", err, p.out)
	}
	return params.GetFiles()
}

// crashFractions returns the kill points as fractions of the time a request takes
// without a crash: from right after sending to just after it completes.
func crashFractions() []float64 { return []float64{0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1, 1.3} }

// timed runs a request and returns how long it took.
func timed(t *testing.T, p *proc, method, path string, body []byte, certs ...tls.Certificate) time.Duration {
	t.Helper()
	start := time.Now()
	if r := p.do(t, method, path, body, certs...); r.Code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, r.Code, r.Message)
	}
	return time.Since(start)
}

func scaled(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }

func TestCrashDuringUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Coordinator binary")
	}
	bin := filepath.Join(testsupport.GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator"), "coordinator")
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	k1, k2 := testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)
	// The two manifests differ in their arguments and recovery keys, so
	// every update also moves the state to a new data key.
	variants := [2][]byte{}
	for i := range variants {
		keys := map[string]*testsupport.RecoveryKey{"k1": k1}
		if i == 1 {
			keys["k2"] = k2
		}
		m := govManifest(admin, admin2, nobody, keys)
		sub(sub(sub(m, "Marbles"), "app"), "Parameters")["Argv"] = []string{"app", fmt.Sprint(i)}
		variants[i] = encode(t, m)
	}
	dir := t.TempDir()
	p := startProc(t, bin, dir)
	if r := p.do(t, http.MethodPost, "/api/v2/manifest", manifestBody(t, variants[0])); r.Code != http.StatusOK {
		t.Fatalf("manifest: %d %s", r.Code, r.Message)
	}
	if r := p.do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	base := p.observe(t)
	files := activateProc(t, p)
	// One update without a crash measures how long the requests take.
	initDuration := timed(t, p, http.MethodPost, "/api/v2/update", manifestBody(t, variants[1]), admin.TLS)
	ackDuration := timed(t, p, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, variants[1]), admin2.TLS)
	t.Logf("initiating takes %v, applying %v", initDuration, ackDuration)
	log := p.observe(t).log
	current := 1

	for i, f := range crashFractions() {
		target := 1 - current
		targetFP := fingerprintOf(variants[target])
		currentFP := fingerprintOf(variants[current])
		delay := scaled(initDuration, f)

		// Kill while the update is initiated.
		p.killDuring(t, delay, http.MethodPost, "/api/v2/update", manifestBody(t, variants[target]), admin.TLS)
		p = startProc(t, bin, dir)
		requireRecoveryDataMatches(t, p)
		o := p.observe(t)
		checkSame(t, i, "initiation", o, base, currentFP)
		switch {
		case o.pending == "" && len(o.log) == len(log):
			t.Logf("delay %v: killed before the initiation was stored", delay)
			r := p.do(t, http.MethodPost, "/api/v2/update", manifestBody(t, variants[target]), admin.TLS)
			if r.Code != http.StatusOK {
				t.Fatalf("delay %d: initiating: %d %s", i, r.Code, r.Message)
			}
		case o.pending == targetFP && o.missing == 1 && len(o.log) == len(log)+1 && strings.HasPrefix(o.log[len(log)], "Complete Manifest update initiated"):
			t.Logf("delay %v: killed after the initiation was stored", delay)
		default:
			t.Fatalf("delay %d: inconsistent after a crash during initiation: pending %q missing %d log %q", i, o.pending, o.missing, o.log)
		}
		log = append(log, "Complete Manifest update initiated by user "+targetFP)

		// Kill while the last acknowledgement applies the update.
		delay = scaled(ackDuration, f)
		p.killDuring(t, delay, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, variants[target]), admin2.TLS)
		p = startProc(t, bin, dir)
		requireRecoveryDataMatches(t, p)
		o = p.observe(t)
		switch o.fingerprint {
		case currentFP:
			t.Logf("delay %v: killed before the update was applied", delay)
			checkSame(t, i, "acknowledgement", o, base, currentFP)
			if o.pending != targetFP || !slices.Equal(o.log, log) {
				t.Fatalf("delay %d: update not applied but pending %q log %q", i, o.pending, o.log)
			}
			r := p.do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, variants[target]), admin2.TLS)
			if r.Code != http.StatusOK {
				t.Fatalf("delay %d: acknowledging: %d %s", i, r.Code, r.Message)
			}
			o = p.observe(t)
		case targetFP:
			t.Logf("delay %v: killed after the update was applied", delay)
		default:
			t.Fatalf("delay %d: manifest fingerprint %s is neither before nor after", i, o.fingerprint)
		}
		log = append(log, "Complete Manifest update acknowledged by user "+targetFP, "Complete Manifest updated "+targetFP)
		if o.status != 3 || o.root != base.root || o.fingerprint != targetFP || o.pending != "" || !slices.Equal(o.log, log) {
			t.Fatalf("delay %d: after the update: status %d fingerprint %s pending %q log %q", i, o.status, o.fingerprint, o.pending, o.log)
		}
		got := activateProc(t, p)
		for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
			if !bytes.Equal(got[f], files[f]) {
				t.Fatalf("delay %d: %s changed across the update and crash", i, f)
			}
		}
		current = target
	}
}

// requireRecoveryDataMatches fails if the restarted Coordinator found a
// manifest whose recovery data is not stored with it: the owners could not
// recover that state.
func requireRecoveryDataMatches(t *testing.T, p *proc) {
	t.Helper()
	if strings.Contains(p.out.String(), "recovery data does not match") {
		t.Fatalf("a crash left a manifest without its recovery data:\n%s", p.out)
	}
}

// TestCrashDuringManifestSet kills the Coordinator while it sets a manifest
// with recovery keys: a restart finds either no manifest or the manifest
// together with its recovery data, never one without the other.
func TestCrashDuringManifestSet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Coordinator binary")
	}
	bin := filepath.Join(testsupport.GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator"), "coordinator")
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	raw := encode(t, govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"k1": testsupport.NewRecoveryKey(t), "k2": testsupport.NewRecoveryKey(t)}))
	var setDuration time.Duration
	{
		p := startProc(t, bin, t.TempDir())
		setDuration = timed(t, p, http.MethodPost, "/api/v2/manifest", manifestBody(t, raw))
		p.kill(t)
	}
	t.Logf("setting the manifest takes %v", setDuration)
	for i, f := range crashFractions() {
		dir := t.TempDir()
		p := startProc(t, bin, dir)
		p.killDuring(t, scaled(setDuration, f), http.MethodPost, "/api/v2/manifest", manifestBody(t, raw))
		p = startProc(t, bin, dir)
		requireRecoveryDataMatches(t, p)
		switch o := p.observe(t); o.status {
		case 2:
			t.Logf("delay %d: killed before the manifest was stored", i)
		case 3:
			if o.fingerprint != fingerprintOf(raw) {
				t.Fatalf("delay %d: fingerprint %s", i, o.fingerprint)
			}
			t.Logf("delay %d: killed after the manifest was stored", i)
		default:
			t.Fatalf("delay %d: status %d after a crash during a manifest set", i, o.status)
		}
		p.kill(t)
	}
}

func checkSame(t *testing.T, i int, what string, o, base observed, fingerprint string) {
	t.Helper()
	if o.status != 3 || o.root != base.root || o.fingerprint != fingerprint {
		t.Fatalf("delay %d: after a crash during %s: status %d, root same %v, fingerprint %s (want %s)", i, what, o.status, o.root == base.root, o.fingerprint, fingerprint)
	}
}

func TestCrashDuringRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Coordinator binary")
	}
	bin := filepath.Join(testsupport.GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator"), "coordinator")
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	keys := map[string]*testsupport.RecoveryKey{"k0": testsupport.NewRecoveryKey(t), "k1": testsupport.NewRecoveryKey(t), "k2": testsupport.NewRecoveryKey(t)}
	m := govManifest(admin, admin2, nobody, keys)
	sub(m, "Config")["RecoveryThreshold"] = 2
	raw := encode(t, m)

	// The state is made on "another machine": sealed with a key the
	// simulation build cannot unseal.
	original := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(original), coordtest.WithSealer(coordtest.NewAESSealer(t)))
	encrypted := c.SetManifest(t, raw)
	if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	root := string(c.RootCertificate().Raw)
	files := activateApp(t, c, uuidA).GetFiles()
	msgs, _ := updateLog(t, c)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	shares := map[string][]byte{}
	for name, ct := range encrypted {
		shares[name] = keys[name].Decrypt(t, ct)
	}
	upload := func(p *proc, name string) coordtest.Response {
		return p.do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, shares[name], keys[name].Sign(t, shares[name])))
	}

	// One recovery without a crash measures how long the last share takes.
	var lastDuration time.Duration
	{
		dir := t.TempDir()
		copyDir(t, original, dir)
		p := startProc(t, bin, dir)
		if r := upload(p, "k0"); r.Code != http.StatusOK {
			t.Fatalf("first share: %d %s", r.Code, r.Message)
		}
		lastDuration = timed(t, p, http.MethodPost, "/api/v2/recover", recoverBody(t, shares["k2"], keys["k2"].Sign(t, shares["k2"])))
		p.kill(t)
		t.Logf("the last share takes %v", lastDuration)
	}

	for i, f := range crashFractions() {
		delay := scaled(lastDuration, f)
		dir := t.TempDir()
		copyDir(t, original, dir)
		p := startProc(t, bin, dir)
		if o := p.observe(t); o.status != 1 {
			t.Fatalf("delay %d: status %d on another machine", i, o.status)
		}
		if r := upload(p, "k0"); r.Code != http.StatusOK {
			t.Fatalf("delay %d: first share: %d %s", i, r.Code, r.Message)
		}
		// Kill while the last share unlocks and reseals the state.
		p.killDuring(t, delay, http.MethodPost, "/api/v2/recover", recoverBody(t, shares["k2"], keys["k2"].Sign(t, shares["k2"])))
		p = startProc(t, bin, dir)
		o := p.observe(t)
		switch o.status {
		case 1:
			t.Logf("delay %v: killed before the state was recovered", delay)
			// Shares are kept in memory only: both are needed again.
			if r := upload(p, "k2"); r.Code != http.StatusOK || !bytes.Contains(r.Data, []byte(`"remaining":1`)) {
				t.Fatalf("delay %d: share after the restart: %d %s %s", i, r.Code, r.Message, r.Data)
			}
			if r := upload(p, "k1"); r.Code != http.StatusOK || !bytes.Contains(r.Data, []byte(`"remaining":0`)) {
				t.Fatalf("delay %d: completing recovery: %d %s %s", i, r.Code, r.Message, r.Data)
			}
			o = p.observe(t)
		case 3:
			t.Logf("delay %v: killed after the state was recovered", delay)
		default:
			t.Fatalf("delay %d: status %d after a crash during recovery", i, o.status)
		}
		if o.status != 3 || o.root != root || o.fingerprint != fingerprintOf(raw) || len(o.log) != len(msgs) || o.pending != "" {
			t.Fatalf("delay %d: recovered state: status %d root same %v fingerprint %s log %q", i, o.status, o.root == root, o.fingerprint, o.log)
		}
		got := activateProc(t, p)
		for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
			if !bytes.Equal(got[f], files[f]) {
				t.Fatalf("delay %d: %s differs after recovery", i, f)
			}
		}
		// Sealed for this machine now: a restart needs no recovery.
		p.kill(t)
		p = startProc(t, bin, dir)
		if o := p.observe(t); o.status != 3 || o.root != root {
			t.Fatalf("delay %d: status %d after restarting a recovered Coordinator", i, o.status)
		}
		p.kill(t)
	}
}

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
