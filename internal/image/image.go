// Package image builds minimal, reproducible OCI container images for static
// binaries without a container engine or a base image.
//
// An image has a single layer holding the binary at /usr/local/bin/<name>,
// /etc/passwd and /etc/group entries for the non-root user "nonroot"
// (65532:65532), its home directory, a world-writable /tmp and the extra
// directories and root-owned files of its Spec (such as a CA certificate
// bundle). The result can be written as an OCI image layout directory or as
// a tarball that `docker load` accepts.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image specification.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Non-root user of the images, as set by the marblerun chart.
const (
	UID      = 65532
	GID      = 65532
	UserName = "nonroot"
	HomeDir  = "/home/nonroot"
)

// BinDir is the directory that holds the image's binary.
const BinDir = "/usr/local/bin"

// DefaultPath is the PATH of the image's environment.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Dir is an extra directory created in the image.
type Dir struct {
	Path string // absolute path, e.g. /coordinator/data
	Mode int64  // permission bits, e.g. 0o755
	UID  int
	GID  int
}

// File is an extra regular file of the layer, owned by root. Missing parent
// directories are created as root-owned 0755.
type File struct {
	Path string // absolute path, e.g. /etc/ssl/certs/ca-certificates.crt
	Mode int64  // permission bits, e.g. 0o644
	Data []byte
}

// Spec describes an image.
type Spec struct {
	// Name of the binary; it is installed as /usr/local/bin/<Name>.
	Name string
	// Binary is the content of the static binary.
	Binary []byte
	// Ref is the image reference, e.g. ghcr.io/marblemesh/coordinator:v0.1.0.
	Ref string
	// Version and Source fill the org.opencontainers.image labels; Title
	// defaults to Name.
	Title, Version, Source string
	// WorkingDir defaults to HomeDir.
	WorkingDir string
	// Env is added after DefaultPath.
	Env []string
	// ExposedPorts such as "2001/tcp".
	ExposedPorts []string
	// Dirs are extra directories of the layer.
	Dirs []Dir
	// Files are extra regular files of the layer. A file may not take the
	// path of another file (the binary, /etc/passwd, /etc/group, another
	// entry of Files) or of a directory (Dirs, /tmp, HomeDir or a parent of
	// any entry), nor be the parent of another entry.
	Files []File
	// Created is the creation time of the image and the modification time
	// of all files in the layer. Fix it for reproducible builds.
	Created time.Time
}

// Descriptor references a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform of an image.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is an OCI image index, the index.json of an image layout.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// ContainerConfig is the execution part of the image configuration.
type ContainerConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
}

// RootFS lists the layers' uncompressed digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History describes how a layer was made.
type History struct {
	Created   string `json:"created,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// Config is an OCI image configuration.
type Config struct {
	Created      string          `json:"created,omitempty"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       ContainerConfig `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
	History      []History       `json:"history,omitempty"`
}

// Image is a built image: its blobs and their descriptors.
type Image struct {
	Ref string

	Manifest     []byte
	Config       []byte
	Layer        []byte // gzip-compressed tar
	ManifestDesc Descriptor
	ConfigDesc   Descriptor
	LayerDesc    Descriptor
	DiffID       string // digest of the uncompressed layer
}

// Digest returns the manifest digest, which identifies the image.
func (img *Image) Digest() string { return img.ManifestDesc.Digest }

// Blobs returns the image's blobs by digest.
func (img *Image) Blobs() map[string][]byte {
	return map[string][]byte{
		img.ManifestDesc.Digest: img.Manifest,
		img.ConfigDesc.Digest:   img.Config,
		img.LayerDesc.Digest:    img.Layer,
	}
}

// DigestOf returns the sha256 digest of b as "sha256:<hex>".
func DigestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Build builds the image described by spec.
func Build(spec Spec) (*Image, error) {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/\\") || spec.Name == "." || spec.Name == ".." {
		return nil, fmt.Errorf("image: invalid binary name %q", spec.Name)
	}
	if len(spec.Binary) == 0 {
		return nil, errors.New("image: empty binary")
	}
	created := spec.Created.UTC().Truncate(time.Second)
	bin := path.Join(BinDir, spec.Name)

	tarball, err := buildLayer(spec, bin, created)
	if err != nil {
		return nil, err
	}
	diffID := DigestOf(tarball)
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	// The gzip header carries no name and no modification time, so the
	// compressed layer only depends on the tar content.
	if _, err := zw.Write(tarball); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	layer := gz.Bytes()

	title := spec.Title
	if title == "" {
		title = spec.Name
	}
	labels := map[string]string{"org.opencontainers.image.title": title}
	if spec.Version != "" {
		labels["org.opencontainers.image.version"] = spec.Version
	}
	if spec.Source != "" {
		labels["org.opencontainers.image.source"] = spec.Source
	}
	var ports map[string]struct{}
	if len(spec.ExposedPorts) > 0 {
		ports = make(map[string]struct{}, len(spec.ExposedPorts))
		for _, p := range spec.ExposedPorts {
			ports[p] = struct{}{}
		}
	}
	workDir := spec.WorkingDir
	if workDir == "" {
		workDir = HomeDir
	}
	createdStr := created.Format(time.RFC3339)
	cfg := Config{
		Created:      createdStr,
		Architecture: "amd64",
		OS:           "linux",
		Config: ContainerConfig{
			User:         fmt.Sprintf("%d:%d", UID, GID),
			ExposedPorts: ports,
			Env:          append([]string{DefaultPath}, spec.Env...),
			Entrypoint:   []string{bin},
			WorkingDir:   workDir,
			Labels:       labels,
		},
		RootFS:  RootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []History{{Created: createdStr, CreatedBy: "marblemesh internal/image", Comment: "static binary " + bin}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}

	img := &Image{
		Ref:        spec.Ref,
		Config:     cfgJSON,
		Layer:      layer,
		DiffID:     diffID,
		ConfigDesc: Descriptor{MediaType: MediaTypeConfig, Digest: DigestOf(cfgJSON), Size: int64(len(cfgJSON))},
		LayerDesc:  Descriptor{MediaType: MediaTypeLayer, Digest: DigestOf(layer), Size: int64(len(layer))},
	}
	man := Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        img.ConfigDesc,
		Layers:        []Descriptor{img.LayerDesc},
	}
	if img.Manifest, err = json.Marshal(man); err != nil {
		return nil, err
	}
	img.ManifestDesc = Descriptor{
		MediaType: MediaTypeManifest,
		Digest:    DigestOf(img.Manifest),
		Size:      int64(len(img.Manifest)),
		Platform:  &Platform{Architecture: "amd64", OS: "linux"},
	}
	return img, nil
}

type entry struct {
	hdr  tar.Header
	body []byte
}

func buildLayer(spec Spec, bin string, mtime time.Time) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:%s:/sbin/nologin\n", UserName, UID, GID, UserName, HomeDir)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", UserName, GID)

	entries := map[string]*entry{}
	dir := func(p string, mode int64, uid, gid int) {
		name := strings.TrimPrefix(path.Clean(p), "/") + "/"
		entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid}}
	}
	// parents creates missing parent directories as root-owned 0755.
	parents := func(p string) {
		for d := path.Dir(path.Clean(p)); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := entries[strings.TrimPrefix(d, "/")+"/"]; !ok {
				dir(d, 0o755, 0, 0)
			}
		}
	}
	file := func(p string, mode int64, uid, gid int, body []byte) {
		parents(p)
		name := strings.TrimPrefix(p, "/")
		entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, Size: int64(len(body))}, body: body}
	}

	dir("/tmp", 0o1777, 0, 0)
	dir(HomeDir, 0o700, UID, GID)
	parents(HomeDir)
	for _, d := range spec.Dirs {
		if !path.IsAbs(d.Path) || path.Clean(d.Path) == "/" {
			return nil, fmt.Errorf("image: invalid directory %q", d.Path)
		}
		parents(d.Path)
		dir(d.Path, d.Mode, d.UID, d.GID)
	}
	file("/etc/passwd", 0o644, 0, 0, []byte(passwd))
	file("/etc/group", 0o644, 0, 0, []byte(group))
	file(bin, 0o755, UID, GID, spec.Binary)
	for _, f := range spec.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) == "/" {
			return nil, fmt.Errorf("image: invalid file path %q", f.Path)
		}
		if f.Mode&^0o7777 != 0 {
			return nil, fmt.Errorf("image: file %s: invalid mode %o", f.Path, f.Mode)
		}
		p := path.Clean(f.Path)
		if _, ok := entries[strings.TrimPrefix(p, "/")]; ok {
			return nil, fmt.Errorf("image: file %s: %s is already a file of the image", f.Path, p)
		}
		file(p, f.Mode, 0, 0, f.Data)
	}
	// A path may not be both a file and a directory: that catches files at
	// the path of a directory and files below another file.
	for n, e := range entries {
		if e.hdr.Typeflag != tar.TypeReg {
			continue
		}
		if _, ok := entries[n+"/"]; ok {
			return nil, fmt.Errorf("image: /%s is both a file and a directory", n)
		}
	}

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime = mtime
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
