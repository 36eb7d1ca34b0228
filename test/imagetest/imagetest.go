// Package imagetest reads the layers of images built by package image, for
// tests.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"
)

// Entry is one entry of a layer: its tar header and content.
type Entry struct {
	tar.Header
	Body []byte
}

// ReadLayer reads a gzipped tar layer and returns its entries by name and
// the names in layer order. Malformed input fails t; a name that appears
// twice is reported as an error.
func ReadLayer(t testing.TB, gz []byte) (map[string]Entry, []string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	tr := tar.NewReader(zr)
	entries := map[string]Entry{}
	var order []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, order
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("layer entry %s: %v", h.Name, err)
		}
		if _, dup := entries[h.Name]; dup {
			t.Errorf("duplicate layer entry %q", h.Name)
		}
		entries[h.Name] = Entry{Header: *h, Body: body}
		order = append(order, h.Name)
	}
}
