package main

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/image"
	"github.com/marblemesh/marblemesh/test/imagetest"
)

// goCertFiles are the files Go's crypto/x509 reads the system roots from
// on Linux (certFiles in crypto/x509/root_linux.go), stopping at the first
// it finds.
var goCertFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// testPKI is a CA and a server certificate it issued for 127.0.0.1.
type testPKI struct {
	caPEM  []byte
	server tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test PCCS CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "pccs"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		server: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key},
	}
}

func TestReadCABundle(t *testing.T) {
	pki := newTestPKI(t)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("key")})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	withHeader := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: pki.server.Certificate[0]})
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		content []byte // nil: the file does not exist
		ok      bool
	}{
		{"missing", nil, false},
		{"empty", []byte{}, false},
		{"text", []byte("no certificates here\n"), false},
		{"other PEM type", keyPEM, false},
		{"unparsable certificate", badCert, false},
		{"certificate with headers", withHeader, false},
		{"one certificate", pki.caPEM, true},
		{"certificate among other blocks", slices.Concat([]byte("# comment\n"), keyPEM, badCert, pki.caPEM), true},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".pem")
		if c.content != nil {
			if err := os.WriteFile(file, c.content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := readCABundle(file)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.ok && !bytes.Equal(got, c.content):
			t.Errorf("%s: bundle changed when read", c.name)
		case !c.ok && err == nil:
			t.Errorf("%s: readCABundle succeeded", c.name)
		case !c.ok && (!strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "-ca-bundle")):
			t.Errorf("%s: error %q names neither the file nor -ca-bundle", c.name, err)
		}
	}
}

func TestImageSpecs(t *testing.T) {
	bundle := newTestPKI(t).caPEM
	cfg := config{repo: "ghcr.io/marblemesh", version: "v0.1.0", created: time.Unix(0, 0).UTC(), caBundle: bundle}
	if !slices.Contains(goCertFiles, caBundlePath) {
		t.Fatalf("%s is none of Go's Linux certificate files", caBundlePath)
	}
	for _, tg := range targets {
		spec := imageSpec(tg, []byte("binary of "+tg.name), cfg)
		img, err := image.Build(spec)
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		again, err := image.Build(imageSpec(tg, []byte("binary of "+tg.name), cfg))
		if err != nil {
			t.Fatal(err)
		}
		if img.Digest() != again.Digest() || !bytes.Equal(img.Layer, again.Layer) {
			t.Errorf("%s: two builds with the same bundle differ", tg.name)
		}
		f, ok := layerFiles(t, img.Layer)[strings.TrimPrefix(caBundlePath, "/")]
		if !ok || f.Typeflag != tar.TypeReg || f.Mode != 0o644 || f.Uid != 0 || f.Gid != 0 || !bytes.Equal(f.Body, bundle) {
			t.Errorf("%s: CA bundle entry %+v (present %v)", tg.name, f.Header, ok)
		}
		other := cfg
		other.caBundle = append(slices.Clone(bundle), bundle...)
		changed, err := image.Build(imageSpec(tg, []byte("binary of "+tg.name), other))
		if err != nil {
			t.Fatal(err)
		}
		if changed.Digest() == img.Digest() {
			t.Errorf("%s: another bundle gave the same image", tg.name)
		}
	}
}

func layerFiles(t *testing.T, gz []byte) map[string]imagetest.Entry {
	t.Helper()
	entries, _ := imagetest.ReadLayer(t, gz)
	return entries
}

// readLayout returns the single layer of the image in an OCI image layout
// directory, following index.json and the manifest.
func readLayout(t *testing.T, dir string) []byte {
	t.Helper()
	blob := func(digest string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "blobs", strings.Replace(digest, ":", string(filepath.Separator), 1)))
		if err != nil {
			t.Fatal(err)
		}
		if image.DigestOf(b) != digest {
			t.Fatalf("blob %s does not match its digest", digest)
		}
		return b
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index image.Index
	if err := json.Unmarshal(raw, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", raw, err)
	}
	var man image.Manifest
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &man); err != nil || len(man.Layers) != 1 {
		t.Fatalf("manifest %+v: %v", man, err)
	}
	return blob(man.Layers[0].Digest)
}

// extract writes the layer's directories and regular files below root.
func extract(t *testing.T, files map[string]imagetest.Entry, root string) {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names) // parents first
	for _, n := range names {
		f := files[n]
		p := filepath.Join(root, filepath.FromSlash(n))
		switch f.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.WriteFile(p, f.Body, os.FileMode(f.Mode)&os.ModePerm); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected layer entry %s of type %c", n, f.Typeflag)
		}
	}
}

// probeSrc fetches a URL with an http.Client configured as the Coordinator's
// PCS client is by default (use_secure_cert = true): the system roots check
// the server's certificate.
const probeSrc = `package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s\n", resp.StatusCode, body)
}
`

func goBuild(t *testing.T, dir, out string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", out}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
}

// TestCoordinatorImageTrustsBundle builds the Coordinator's image twice as
// the command does, with a test CA as -ca-bundle, checks that the builds are
// identical and that the bundle lies in the image's root where Go's
// crypto/x509 looks for system roots.
// As root on linux/amd64 it then runs an HTTPS client in a process whose
// root directory is the unpacked image: it trusts a server whose
// certificate the test CA issued, and does not once the bundle is removed.
func TestCoordinatorImageTrustsBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the Coordinator")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not found")
	}
	pki := newTestPKI(t)
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundleFile, pki.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle, err := readCABundle(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	var coordinator []target
	for _, tg := range targets {
		if tg.name == "coordinator" {
			coordinator = append(coordinator, tg)
		}
	}
	if len(coordinator) != 1 {
		t.Fatalf("no coordinator target in %+v", targets)
	}
	out := t.TempDir()
	cfg := config{out: out, repo: "ghcr.io/marblemesh", version: "v0.1.0", commit: "test", created: time.Unix(0, 0).UTC(), caBundle: bundle}
	t.Chdir(filepath.Join("..", "..")) // the command runs from the repository root
	if err := run(cfg, coordinator); err != nil {
		t.Fatal(err)
	}

	layer := readLayout(t, filepath.Join(out, "coordinator"))
	archive, err := os.ReadFile(filepath.Join(out, "coordinator.tar"))
	if err != nil {
		t.Fatal(err)
	}
	// The same inputs, bundle included, give the same image.
	again := cfg
	again.out = t.TempDir()
	if err := run(again, coordinator); err != nil {
		t.Fatal(err)
	}
	if archive2, err := os.ReadFile(filepath.Join(again.out, "coordinator.tar")); err != nil || !bytes.Equal(archive, archive2) {
		t.Errorf("two builds differ (%v)", err)
	}
	if !bytes.Contains(archive, layer) {
		t.Error("the docker archive lacks the layout's layer")
	}
	files := layerFiles(t, layer)
	if _, ok := files["usr/local/bin/coordinator"]; !ok {
		t.Fatal("the image lacks the Coordinator")
	}
	f, ok := files[strings.TrimPrefix(caBundlePath, "/")]
	if !ok {
		t.Fatalf("the image lacks %s", caBundlePath)
	}
	if !slices.Contains(goCertFiles, caBundlePath) {
		t.Errorf("%s is none of Go's Linux certificate files", caBundlePath)
	}
	if f.Typeflag != tar.TypeReg || f.Mode != 0o644 || f.Uid != 0 || f.Gid != 0 || !bytes.Equal(f.Body, pki.caPEM) {
		t.Errorf("CA bundle entry %+v, content equal to -ca-bundle: %v", f.Header, bytes.Equal(f.Body, pki.caPEM))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.Body) {
		t.Error("the image's CA bundle holds no certificate")
	}
	// The non-root user can read it.
	for _, dir := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/"} {
		if d := files[dir]; d.Typeflag != tar.TypeDir || d.Mode&0o005 != 0o005 {
			t.Errorf("%s: %+v", dir, d.Header)
		}
	}

	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" || os.Geteuid() != 0 {
		t.Skipf("running a process in the image's root needs root on linux/amd64")
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil { // the image's / as the non-root user sees it
		t.Fatal(err)
	}
	extract(t, files, root)
	probeDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(probeDir, "main.go"), []byte(probeSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(probeDir, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	goBuild(t, probeDir, filepath.Join(root, "tmp", "probe"), ".")

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "collateral")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshake below
	srv.StartTLS()
	defer srv.Close()

	probe := func() (string, error) {
		cmd := exec.Command("/tmp/probe", srv.URL)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: image.UID, Gid: image.GID}}
		cmd.Dir = "/"
		cmd.Env = []string{image.DefaultPath} // no SSL_CERT_FILE or SSL_CERT_DIR
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if got, err := probe(); err != nil || got != "200 collateral\n" {
		t.Errorf("HTTPS from the image's root: %v: %s", err, got)
	}
	// Without the bundle the same client fails: the bundle is what it trusts.
	if err := os.Remove(filepath.Join(root, filepath.FromSlash(caBundlePath))); err != nil {
		t.Fatal(err)
	}
	got, err := probe()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(got, "certificate") {
		t.Errorf("HTTPS from the image's root without the bundle: %v: %s", err, got)
	}
}
