package image

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Annotations of the index.json entry naming the image.
const (
	AnnotationRefName       = "org.opencontainers.image.ref.name"
	AnnotationContainerdRef = "io.containerd.image.name"
)

// ociLayout is the content of the oci-layout file.
const ociLayout = `{"imageLayoutVersion":"1.0.0"}`

// DockerManifestEntry is an entry of the manifest.json of a `docker save`
// tarball.
type DockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// Index returns the index.json of an image layout holding img.
func (img *Image) Index() ([]byte, error) {
	desc := img.ManifestDesc
	if img.Ref != "" {
		desc.Annotations = map[string]string{
			AnnotationContainerdRef: img.Ref,
			AnnotationRefName:       tagOf(img.Ref),
		}
	}
	return json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{desc}})
}

// tagOf returns the tag of ref ("latest" if none).
func tagOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i+1:], "/") {
		return ref[i+1:]
	}
	return "latest"
}

func blobPath(digest string) string {
	return "blobs/" + strings.Replace(digest, ":", "/", 1)
}

// layoutFiles returns the files of the image's OCI layout, by slash path.
func (img *Image) layoutFiles() (map[string][]byte, error) {
	index, err := img.Index()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"oci-layout": []byte(ociLayout),
		"index.json": index,
	}
	for d, b := range img.Blobs() {
		files[blobPath(d)] = b
	}
	return files, nil
}

// WriteLayout writes img as an OCI image layout into dir, which must not
// exist or be empty.
func (img *Image) WriteLayout(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("image: %s is not empty", dir)
	} else if err != nil && !os.IsNotExist(err) {
		return err
	}
	files, err := img.layoutFiles()
	if err != nil {
		return err
	}
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil { //nolint:gosec // G301: an OCI image layout is public and read by other tools
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil { //nolint:gosec // G306: as above
			return err
		}
	}
	return nil
}

// WriteDockerArchive writes img as a tarball for `docker load`: an OCI image
// layout plus the manifest.json of `docker save`, tagged with img.Ref. The
// tarball's entries have the modification time mtime.
func (img *Image) WriteDockerArchive(w io.Writer, mtime time.Time) error {
	files, err := img.layoutFiles()
	if err != nil {
		return err
	}
	entry := DockerManifestEntry{
		Config: blobPath(img.ConfigDesc.Digest),
		Layers: []string{blobPath(img.LayerDesc.Digest)},
	}
	if img.Ref != "" {
		entry.RepoTags = []string{img.Ref}
	}
	if files["manifest.json"], err = json.Marshal([]DockerManifestEntry{entry}); err != nil {
		return err
	}

	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	mtime = mtime.UTC().Truncate(time.Second)
	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, n := range names {
		b := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}
