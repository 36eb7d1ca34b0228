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
package main

import (
	"bytes"
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
	flag.Parse()

	created, err := creationTime(*createdFlag)
	if err != nil {
		log.Fatal(err)
	}
	if *commit == "" {
		*commit = gitCommit()
	}
	if err := run(*out, *repo, *version, *commit, created); err != nil {
		log.Fatal(err)
	}
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

func run(out, repo, version, commit string, created time.Time) error {
	tmp, err := os.MkdirTemp("", "marblemesh-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-s -w -X %[1]s/internal/version.Version=%[2]s -X %[1]s/internal/version.Commit=%[3]s", modulePath, version, commit)
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
		ref := fmt.Sprintf("%s/%s:%s", repo, t.name, version)
		img, err := image.Build(image.Spec{
			Name:         t.name,
			Binary:       binary,
			Ref:          ref,
			Version:      version,
			Source:       source,
			Env:          t.env,
			ExposedPorts: t.ports,
			Dirs:         t.dirs,
			Created:      created,
		})
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if err := writeImage(out, t.name, img, created); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		fmt.Printf("%s %s\n", ref, img.Digest())
	}
	return nil
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
