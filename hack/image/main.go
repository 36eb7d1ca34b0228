// Command image builds the container images of the Coordinator and the
// marble-injector without a container engine: it compiles static binaries
// and packs each into a single-layer image running as 65532:65532 (see
// internal/image).
//
//	go run ./hack/image -out dist/images
//
// For each image it writes an OCI image layout directory <out>/<name>/ and a
// tarball <out>/<name>.tar for `docker load`, tagged with the chart's image
// name, and prints the manifest digests. Builds are reproducible: the
// creation time comes from -created or SOURCE_DATE_EPOCH (default: the Unix
// epoch).
//
// Both images carry the build machine's CA certificates at
// /etc/ssl/certs/ca-certificates.crt, where Go's crypto/x509 finds them, so
// that the Coordinator can check the TLS certificate of the PCCS or of
// Intel's PCS when it fetches DCAP collateral. -ca-bundle names the PEM file
// to copy (default: /etc/ssl/certs/ca-certificates.crt, which Debian's and
// Ubuntu's ca-certificates package installs); the build fails if it is
// missing or holds no certificate. The same bundle gives the same images.
//
// Flags:
//
//	-out dir          output directory (default dist/images)
//	-repository repo  image repository (default ghcr.io/marblemesh)
//	-version v        image tag and version stamped into the binaries (default v0.1.0)
//	-commit c         commit stamped into the binaries (default: git rev-parse HEAD)
//	-created t        creation time, RFC 3339 (default: SOURCE_DATE_EPOCH or the Unix epoch)
//	-ca-bundle file   PEM file of CA certificates to install (default /etc/ssl/certs/ca-certificates.crt)
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/marblemesh/marblemesh/internal/image"
)

const (
	modulePath = "github.com/marblemesh/marblemesh"
	source     = "https://github.com/marblemesh/marblemesh"
)

// caBundlePath is where the images hold their CA certificates: the first of
// the files that Go's crypto/x509 reads on Linux. It is also the default
// -ca-bundle, the bundle of the ca-certificates package on Debian and
// Ubuntu, whose golang images docker/Dockerfile builds in.
const caBundlePath = "/etc/ssl/certs/ca-certificates.crt"

type target struct {
	name  string // binary and image name
	pkg   string
	ports []string
	env   []string
	dirs  []image.Dir
}

// targets mirror docker/Dockerfile.
var targets = []target{
	{
		name:  "coordinator",
		pkg:   "./cmd/coordinator",
		ports: []string{"2001/tcp", "4433/tcp"},
		env:   []string{"EDG_COORDINATOR_SEAL_DIR=/coordinator/data/"},
		dirs:  []image.Dir{{Path: "/coordinator/data", Mode: 0o755, UID: image.UID, GID: image.GID}},
	},
	{
		name:  "marble-injector",
		pkg:   "./cmd/marble-injector",
		ports: []string{"8443/tcp"},
	},
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("image: ")
	out := flag.String("out", "dist/images", "output directory")
	repo := flag.String("repository", "ghcr.io/marblemesh", "image repository (charts/marblerun/values.yaml)")
	version := flag.String("version", "v0.1.0", "image tag and version stamped into the binaries")
	commit := flag.String("commit", "", "commit stamped into the binaries (default: git rev-parse HEAD)")
	createdFlag := flag.String("created", "", "creation time, RFC 3339 (default: SOURCE_DATE_EPOCH or the Unix epoch)")
	caBundle := flag.String("ca-bundle", caBundlePath, "PEM file of CA certificates, installed as "+caBundlePath+" in the images so that the Coordinator can check the TLS certificate of the PCCS or PCS")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/image [flags]\n\n"+
			"Builds reproducible OCI images of the Coordinator and the marble-injector\n"+
			"(static binary, passwd/group, the CA bundle of -ca-bundle) without Docker.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	created, err := creationTime(*createdFlag)
	if err != nil {
		log.Fatal(err)
	}
	if *commit == "" {
		*commit = gitCommit()
	}
	bundle, err := readCABundle(*caBundle)
	if err != nil {
		log.Fatal(err)
	}
	cfg := config{out: *out, repo: *repo, version: *version, commit: *commit, created: created, caBundle: bundle}
	if err := run(cfg, targets); err != nil {
		log.Fatal(err)
	}
}

// config holds the inputs of a build.
type config struct {
	out, repo, version, commit string
	created                    time.Time
	caBundle                   []byte // PEM, checked by readCABundle
}

// readCABundle reads a PEM file of CA certificates and checks that Go's
// crypto/x509 parses at least one certificate from it. Blocks it cannot
// parse are kept, as x509.SystemCertPool skips them too.
func readCABundle(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (install ca-certificates or set -ca-bundle to a PEM file of CA certificates)", err)
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err == nil {
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("CA bundle %s: no PEM certificate that crypto/x509 parses (set -ca-bundle to a PEM file of CA certificates)", file)
	}
	return data, nil
}

func creationTime(flagValue string) (time.Time, error) {
	if flagValue != "" {
		return time.Parse(time.RFC3339, flagValue)
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Unix(0, 0).UTC(), nil
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func run(cfg config, targets []target) error {
	tmp, err := os.MkdirTemp("", "marblemesh-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-s -w -X %[1]s/internal/version.Version=%[2]s -X %[1]s/internal/version.Commit=%[3]s", modulePath, cfg.version, cfg.commit)
	for _, t := range targets {
		bin := filepath.Join(tmp, t.name)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, t.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", t.pkg, err)
		}
		binary, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		spec := imageSpec(t, binary, cfg)
		img, err := image.Build(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if err := writeImage(cfg.out, t.name, img, cfg.created); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		fmt.Printf("%s %s\n", spec.Ref, img.Digest())
	}
	return nil
}

// imageSpec describes the image of t holding binary.
func imageSpec(t target, binary []byte, cfg config) image.Spec {
	return image.Spec{
		Name:         t.name,
		Binary:       binary,
		Ref:          fmt.Sprintf("%s/%s:%s", cfg.repo, t.name, cfg.version),
		Version:      cfg.version,
		Source:       source,
		Env:          t.env,
		ExposedPorts: t.ports,
		Dirs:         t.dirs,
		Files:        []image.File{{Path: caBundlePath, Mode: 0o644, Data: cfg.caBundle}},
		Created:      cfg.created,
	}
}

// writeImage replaces <out>/<name>/ and <out>/<name>.tar.
func writeImage(out, name string, img *image.Image, created time.Time) error {
	layout := filepath.Join(out, name)
	if ents, err := os.ReadDir(layout); err == nil && len(ents) > 0 {
		// Only replace what looks like an image layout written before.
		if _, err := os.Stat(filepath.Join(layout, "oci-layout")); err != nil {
			return fmt.Errorf("%s exists and is no OCI image layout", layout)
		}
		if err := os.RemoveAll(layout); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := img.WriteLayout(layout); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := img.WriteDockerArchive(&buf, created); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, name+".tar"), buf.Bytes(), 0o644)
}
