package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/imagetest"
)

const helloSrc = `package main

import "fmt"

func main() { fmt.Println("hello from the image") }
`

var (
	helloOnce sync.Once
	helloBin  []byte
	helloErr  error
)

// helloBinary compiles a small static linux/amd64 Go binary once per test run.
func helloBinary(t *testing.T) []byte {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found") // go test puts GOROOT/bin on PATH, so only a test binary run by hand lacks it
	}
	helloOnce.Do(func() {
		dir, err := os.MkdirTemp("", "image-test-")
		if err != nil {
			helloErr = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(helloSrc), 0o644); err != nil {
			helloErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.21\n"), 0o644); err != nil {
			helloErr = err
			return
		}
		cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags", "-s -w", "-o", "hello", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = &buildError{err: err, out: string(out)}
			return
		}
		helloBin, helloErr = os.ReadFile(filepath.Join(dir, "hello"))
	})
	if helloErr != nil {
		t.Fatalf("building test binary: %v", helloErr)
	}
	return helloBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var (
	testImgOnce sync.Once
	testImg     *Image
	testImgErr  error
)

// testImage returns the image of testSpec(helloBinary), built once.
func testImage(t *testing.T) *Image {
	t.Helper()
	bin := helloBinary(t)
	testImgOnce.Do(func() { testImg, testImgErr = Build(testSpec(bin)) })
	if testImgErr != nil {
		t.Fatal(testImgErr)
	}
	return testImg
}

func testSpec(bin []byte) Spec {
	return Spec{
		Name:         "hello",
		Binary:       bin,
		Ref:          "ghcr.io/marblemesh/hello:v0.1.0",
		Version:      "v0.1.0",
		Source:       "https://github.com/marblemesh/marblemesh",
		Env:          []string{"FOO=bar"},
		ExposedPorts: []string{"8443/tcp"},
		Dirs:         []Dir{{Path: "/hello/data", Mode: 0o700, UID: UID, GID: GID}},
		Created:      created,
	}
}

type layerFile struct {
	typ      byte
	mode     int64
	uid, gid int
	body     []byte
	mtime    time.Time
}

func readLayer(t *testing.T, gz []byte) (map[string]layerFile, []string) {
	t.Helper()
	entries, order := imagetest.ReadLayer(t, gz)
	files := make(map[string]layerFile, len(entries))
	for name, e := range entries {
		files[name] = layerFile{typ: e.Typeflag, mode: e.Mode, uid: e.Uid, gid: e.Gid, body: e.Body, mtime: e.ModTime}
	}
	return files, order
}

func TestBuild(t *testing.T) {
	bin := helloBinary(t)
	img := testImage(t)

	// Digests and sizes match the content.
	for _, c := range []struct {
		name string
		desc Descriptor
		blob []byte
	}{{"manifest", img.ManifestDesc, img.Manifest}, {"config", img.ConfigDesc, img.Config}, {"layer", img.LayerDesc, img.Layer}} {
		if c.desc.Digest != DigestOf(c.blob) || c.desc.Size != int64(len(c.blob)) {
			t.Errorf("%s descriptor %s/%d does not match content", c.name, c.desc.Digest, c.desc.Size)
		}
	}
	if !strings.HasPrefix(img.Digest(), "sha256:") || len(img.Digest()) != len("sha256:")+64 {
		t.Errorf("bad digest %q", img.Digest())
	}

	var man Manifest
	if err := json.Unmarshal(img.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	if man.SchemaVersion != 2 || man.MediaType != MediaTypeManifest {
		t.Errorf("manifest header %d %q", man.SchemaVersion, man.MediaType)
	}
	if man.Config.Digest != DigestOf(img.Config) || man.Config.MediaType != MediaTypeConfig || man.Config.Size != int64(len(img.Config)) {
		t.Errorf("manifest config %+v", man.Config)
	}
	if len(man.Layers) != 1 || man.Layers[0].Digest != DigestOf(img.Layer) || man.Layers[0].MediaType != MediaTypeLayer || man.Layers[0].Size != int64(len(img.Layer)) {
		t.Fatalf("manifest layers %+v", man.Layers)
	}

	var cfg Config
	if err := json.Unmarshal(img.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if cfg.Created != "2026-01-02T03:04:05Z" {
		t.Errorf("created %q", cfg.Created)
	}
	c := cfg.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q", c.User)
	}
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/hello" {
		t.Errorf("entrypoint %q", c.Entrypoint)
	}
	if c.WorkingDir != HomeDir {
		t.Errorf("working dir %q", c.WorkingDir)
	}
	if strings.Join(c.Env, " ") != DefaultPath+" FOO=bar" {
		t.Errorf("env %q", c.Env)
	}
	if _, ok := c.ExposedPorts["8443/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":   "hello",
		"org.opencontainers.image.version": "v0.1.0",
		"org.opencontainers.image.source":  "https://github.com/marblemesh/marblemesh",
	}
	if len(c.Labels) != len(wantLabels) {
		t.Errorf("labels %v", c.Labels)
	}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}

	// The uncompressed layer's digest is the config's diff ID.
	zr, err := gzip.NewReader(bytes.NewReader(img.Layer))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != DigestOf(raw) || img.DiffID != DigestOf(raw) {
		t.Errorf("rootfs %+v, diff ID of layer %s", cfg.RootFS, DigestOf(raw))
	}

	// The layer holds exactly the expected entries.
	files, order := readLayer(t, img.Layer)
	type want struct {
		typ      byte
		mode     int64
		uid, gid int
	}
	wantFiles := map[string]want{
		"etc/":                {tar.TypeDir, 0o755, 0, 0},
		"etc/group":           {tar.TypeReg, 0o644, 0, 0},
		"etc/passwd":          {tar.TypeReg, 0o644, 0, 0},
		"hello/":              {tar.TypeDir, 0o755, 0, 0},
		"hello/data/":         {tar.TypeDir, 0o700, UID, GID},
		"home/":               {tar.TypeDir, 0o755, 0, 0},
		"home/nonroot/":       {tar.TypeDir, 0o700, UID, GID},
		"tmp/":                {tar.TypeDir, 0o1777, 0, 0},
		"usr/":                {tar.TypeDir, 0o755, 0, 0},
		"usr/local/":          {tar.TypeDir, 0o755, 0, 0},
		"usr/local/bin/":      {tar.TypeDir, 0o755, 0, 0},
		"usr/local/bin/hello": {tar.TypeReg, 0o755, UID, GID},
	}
	if len(files) != len(wantFiles) {
		t.Errorf("layer entries %q, want %d entries", order, len(wantFiles))
	}
	for name, w := range wantFiles {
		f, ok := files[name]
		if !ok {
			t.Errorf("layer lacks %s", name)
			continue
		}
		if f.typ != w.typ || f.mode != w.mode || f.uid != w.uid || f.gid != w.gid {
			t.Errorf("%s: type %c mode %o owner %d:%d, want type %c mode %o owner %d:%d", name, f.typ, f.mode, f.uid, f.gid, w.typ, w.mode, w.uid, w.gid)
		}
		if !f.mtime.Equal(created) {
			t.Errorf("%s: mtime %v", name, f.mtime)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("layer entries not sorted: %q", order)
			break
		}
	}
	if !bytes.Equal(files["usr/local/bin/hello"].body, bin) {
		t.Error("binary in layer differs from the input")
	}
	if !strings.Contains(string(files["etc/passwd"].body), "\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n") {
		t.Errorf("passwd %q", files["etc/passwd"].body)
	}
	if !strings.Contains(string(files["etc/group"].body), "\nnonroot:x:65532:\n") {
		t.Errorf("group %q", files["etc/group"].body)
	}

	// The binary extracted from the layer runs.
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("cannot run a linux/amd64 binary on %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	exe := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(exe, files["usr/local/bin/hello"].body, os.FileMode(files["usr/local/bin/hello"].mode)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe).CombinedOutput()
	if err != nil {
		t.Fatalf("running the extracted binary: %v: %s", err, out)
	}
	if string(out) != "hello from the image\n" {
		t.Errorf("binary printed %q", out)
	}
}

func TestReproducible(t *testing.T) {
	bin := helloBinary(t)
	a := testImage(t)
	b, err := Build(testSpec(bin))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() != b.Digest() || !bytes.Equal(a.Layer, b.Layer) || !bytes.Equal(a.Config, b.Config) {
		t.Errorf("two builds differ: %s vs %s", a.Digest(), b.Digest())
	}
	var ta, tb bytes.Buffer
	if err := a.WriteDockerArchive(&ta, created); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDockerArchive(&tb, created); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
		t.Error("two docker archives differ")
	}

	// Other inputs give another image (small binaries keep this fast).
	small := func(bin []byte, at time.Time) string {
		t.Helper()
		spec := testSpec(bin)
		spec.Created = at
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		return img.Digest()
	}
	base := small([]byte("binary"), created)
	if base != small([]byte("binary"), created) {
		t.Error("two small builds differ")
	}
	if base == small([]byte("binary"), created.Add(time.Second)) || base == small([]byte("binarY"), created) {
		t.Error("different inputs gave the same digest")
	}
}

func TestWriteLayout(t *testing.T) {
	img := testImage(t)
	dir := filepath.Join(t.TempDir(), "layout")
	if err := img.WriteLayout(dir); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteLayout(dir); err == nil {
		t.Error("writing into a non-empty directory succeeded")
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var layout struct {
		ImageLayoutVersion string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(read("oci-layout"), &layout); err != nil || layout.ImageLayoutVersion != "1.0.0" {
		t.Errorf("oci-layout %+v %v", layout, err)
	}
	var index Index
	if err := json.Unmarshal(read("index.json"), &index); err != nil {
		t.Fatal(err)
	}
	if index.SchemaVersion != 2 || index.MediaType != MediaTypeIndex || len(index.Manifests) != 1 {
		t.Fatalf("index %+v", index)
	}
	md := index.Manifests[0]
	if md.Digest != img.Digest() || md.MediaType != MediaTypeManifest || md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != "amd64" {
		t.Errorf("index manifest %+v", md)
	}
	if md.Annotations[AnnotationRefName] != "v0.1.0" || md.Annotations[AnnotationContainerdRef] != "ghcr.io/marblemesh/hello:v0.1.0" {
		t.Errorf("annotations %v", md.Annotations)
	}
	// Every blob is stored under its digest, and the manifest leads to all.
	man := read(blobPath(md.Digest))
	if DigestOf(man) != md.Digest || int64(len(man)) != md.Size {
		t.Fatal("manifest blob does not match its descriptor")
	}
	var m Manifest
	if err := json.Unmarshal(man, &m); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]Descriptor{m.Config}, m.Layers...) {
		b := read(blobPath(d.Digest))
		if DigestOf(b) != d.Digest || int64(len(b)) != d.Size {
			t.Errorf("blob %s does not match its descriptor", d.Digest)
		}
	}
	blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil || len(blobs) != 3 {
		t.Errorf("blobs %v %v", blobs, err)
	}
}

func TestWriteDockerArchive(t *testing.T) {
	img := testImage(t)
	var buf bytes.Buffer
	if err := img.WriteDockerArchive(&buf, created); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	var entries []DockerManifestEntry
	if err := json.Unmarshal(files["manifest.json"], &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || len(entries[0].RepoTags) != 1 || entries[0].RepoTags[0] != "ghcr.io/marblemesh/hello:v0.1.0" {
		t.Fatalf("manifest.json %+v", entries)
	}
	if !bytes.Equal(files[entries[0].Config], img.Config) {
		t.Error("config in the archive differs")
	}
	if len(entries[0].Layers) != 1 || !bytes.Equal(files[entries[0].Layers[0]], img.Layer) {
		t.Error("layer in the archive differs")
	}
	for _, name := range []string{"oci-layout", "index.json", blobPath(img.Digest())} {
		if _, ok := files[name]; !ok {
			t.Errorf("archive lacks %s", name)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	for name, spec := range map[string]Spec{
		"no name":      {Binary: []byte{1}},
		"slash":        {Name: "a/b", Binary: []byte{1}},
		"dotdot":       {Name: "..", Binary: []byte{1}},
		"empty binary": {Name: "x"},
		"relative dir": {Name: "x", Binary: []byte{1}, Dirs: []Dir{{Path: "data", Mode: 0o755}}},
		"root dir":     {Name: "x", Binary: []byte{1}, Dirs: []Dir{{Path: "/", Mode: 0o755}}},
	} {
		if _, err := Build(spec); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
	if got := tagOf("localhost:5000/a/b"); got != "latest" {
		t.Errorf("tagOf = %q", got)
	}
}

func TestBuildFiles(t *testing.T) {
	bundle := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	spec := testSpec([]byte("binary"))
	spec.Files = []File{
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: bundle},
		{Path: "/hello/data/seed", Mode: 0o600, Data: []byte("seed")},
		{Path: "/opt/empty", Mode: 0o444},
	}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	files, order := readLayer(t, img.Layer)
	type want struct {
		typ  byte
		mode int64
		body []byte
	}
	for name, w := range map[string]want{
		"etc/ssl/":                          {tar.TypeDir, 0o755, nil},
		"etc/ssl/certs/":                    {tar.TypeDir, 0o755, nil},
		"etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644, bundle},
		"hello/data/seed":                   {tar.TypeReg, 0o600, []byte("seed")},
		"opt/":                              {tar.TypeDir, 0o755, nil},
		"opt/empty":                         {tar.TypeReg, 0o444, nil},
	} {
		f, ok := files[name]
		if !ok {
			t.Errorf("layer lacks %s", name)
			continue
		}
		if f.typ != w.typ || f.mode != w.mode || f.uid != 0 || f.gid != 0 || !f.mtime.Equal(created) {
			t.Errorf("%s: type %c mode %o owner %d:%d mtime %v, want type %c mode %o owner 0:0 mtime %v", name, f.typ, f.mode, f.uid, f.gid, f.mtime, w.typ, w.mode, created)
		}
		if !bytes.Equal(f.body, w.body) {
			t.Errorf("%s: content %q, want %q", name, f.body, w.body)
		}
	}
	// The extra files leave the other entries as they were.
	if d := files["hello/data/"]; d.typ != tar.TypeDir || d.mode != 0o700 || d.uid != UID || d.gid != GID {
		t.Errorf("hello/data/: %+v", d)
	}
	if !bytes.Equal(files["usr/local/bin/hello"].body, []byte("binary")) {
		t.Error("binary in layer differs from the input")
	}
	if len(files) != 12+6 {
		t.Errorf("layer entries %q, want 18", order)
	}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("layer entries not sorted: %q", order)
			break
		}
	}
}

func TestFilesReproducible(t *testing.T) {
	build := func(files ...File) *Image {
		t.Helper()
		spec := testSpec([]byte("binary"))
		spec.Files = files
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	a := File{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: []byte("bundle")}
	b := File{Path: "/opt/b", Mode: 0o600, Data: []byte("b")}
	x, y := build(a, b), build(a, b)
	if x.Digest() != y.Digest() || !bytes.Equal(x.Layer, y.Layer) || !bytes.Equal(x.Config, y.Config) || !bytes.Equal(x.Manifest, y.Manifest) {
		t.Errorf("two builds of the same spec differ: %s vs %s", x.Digest(), y.Digest())
	}
	var ax, ay bytes.Buffer
	if err := x.WriteDockerArchive(&ax, created); err != nil {
		t.Fatal(err)
	}
	if err := y.WriteDockerArchive(&ay, created); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ax.Bytes(), ay.Bytes()) {
		t.Error("two docker archives of the same spec differ")
	}
	// The layer is sorted: the order of Files does not matter.
	if build(b, a).Digest() != x.Digest() {
		t.Error("the order of Files changed the image")
	}
	// Each part of a file is in the image.
	changed := map[string]File{
		"data": {Path: a.Path, Mode: a.Mode, Data: []byte("bundlE")},
		"mode": {Path: a.Path, Mode: 0o600, Data: a.Data},
		"path": {Path: "/etc/ssl/cert.pem", Mode: a.Mode, Data: a.Data},
	}
	for name, f := range changed {
		if build(f, b).Digest() == x.Digest() {
			t.Errorf("another file %s gave the same digest", name)
		}
	}
	if build(b).Digest() == x.Digest() {
		t.Error("dropping a file gave the same digest")
	}
}

func TestFilesValidation(t *testing.T) {
	f := func(p string) File { return File{Path: p, Mode: 0o644, Data: []byte("x")} }
	for _, c := range []struct {
		name  string
		dirs  []Dir
		files []File
		ok    bool
	}{
		{"none", nil, nil, true},
		{"new directory", nil, []File{f("/etc/ssl/certs/ca-certificates.crt")}, true},
		{"beside passwd", nil, []File{f("/etc/hosts")}, true},
		{"in a Dir", []Dir{{Path: "/data", Mode: 0o700}}, []File{f("/data/seed")}, true},
		{"in the bin directory", nil, []File{f("/usr/local/bin/helper")}, true},
		{"in /tmp", nil, []File{f("/tmp/x")}, true},
		{"unclean path", nil, []File{f("/etc//ssl/./cert.pem")}, true},
		{"empty file", nil, []File{{Path: "/etc/empty", Mode: 0o644}}, true},
		{"two files", nil, []File{f("/a/x"), f("/a/y")}, true},
		{"setuid mode", nil, []File{{Path: "/x", Mode: 0o4755}}, true},

		{"empty path", nil, []File{f("")}, false},
		{"relative", nil, []File{f("etc/hosts")}, false},
		{"dot relative", nil, []File{f("./etc/hosts")}, false},
		{"root", nil, []File{f("/")}, false},
		{"root unclean", nil, []File{f("/..")}, false},
		{"duplicate", nil, []File{f("/etc/hosts"), f("/etc/hosts")}, false},
		{"duplicate after cleaning", nil, []File{f("/etc/hosts"), f("/etc/../etc/hosts")}, false},
		{"binary", nil, []File{f("/usr/local/bin/hello")}, false},
		{"passwd", nil, []File{f("/etc/passwd")}, false},
		{"group", nil, []File{f("/etc/group")}, false},
		{"a Dir", []Dir{{Path: "/data", Mode: 0o700}}, []File{f("/data")}, false},
		{"a Dir, unclean", []Dir{{Path: "/data/", Mode: 0o700}}, []File{f("/data")}, false},
		{"parent of a Dir", []Dir{{Path: "/data/sub", Mode: 0o700}}, []File{f("/data")}, false},
		{"tmp", nil, []File{f("/tmp")}, false},
		{"home", nil, []File{f(HomeDir)}, false},
		{"parent of home", nil, []File{f("/home")}, false},
		{"bin directory", nil, []File{f(BinDir)}, false},
		{"etc", nil, []File{f("/etc")}, false},
		{"below the binary", nil, []File{f("/usr/local/bin/hello/x")}, false},
		{"below passwd", nil, []File{f("/etc/passwd/x")}, false},
		{"below another file", nil, []File{f("/a"), f("/a/b")}, false},
		{"above another file", nil, []File{f("/a/b"), f("/a")}, false},
		{"mode with type bits", nil, []File{{Path: "/x", Mode: 0o100644}}, false},
		{"negative mode", nil, []File{{Path: "/x", Mode: -1}}, false},
	} {
		spec := Spec{Name: "hello", Binary: []byte("binary"), Dirs: c.dirs, Files: c.files, Created: created}
		img, err := Build(spec)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && err == nil {
			t.Errorf("%s: Build succeeded", c.name)
		}
		if c.ok && err == nil {
			files, _ := readLayer(t, img.Layer)
			for _, want := range c.files {
				got, ok := files[strings.TrimPrefix(path.Clean(want.Path), "/")]
				if !ok || got.typ != tar.TypeReg || got.mode != want.Mode || !bytes.Equal(got.body, want.Data) {
					t.Errorf("%s: layer entry for %s: %+v (present %v)", c.name, want.Path, got, ok)
				}
			}
		}
	}
}
