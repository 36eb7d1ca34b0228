// Package issuer produces attestation evidence from inside a trusted
// execution environment through file interfaces, without cgo: Gramine's
// /dev/attestation and Linux configfs-tsm (Intel TDX, AMD SEV-SNP).
package issuer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/marblemesh/marblemesh/attestation"
)

// ErrIssue is wrapped by every issuer error.
var ErrIssue = errors.New("evidence issuance failed")

// GramineDir is Gramine's attestation pseudo-filesystem.
const GramineDir = "/dev/attestation"

// reportDataOffset is where REPORTDATA sits in an SGX v3 quote.
const reportDataOffset = 368

// Gramine issues raw SGX DCAP quotes under gramine-sgx with
// sgx.remote_attestation = "dcap". It is safe for concurrent use.
type Gramine struct {
	dir string
	mu  sync.Mutex
}

// NewGramine returns an issuer for the Gramine attestation folder dir;
// an empty dir selects GramineDir.
func NewGramine(dir string) *Gramine {
	if dir == "" {
		dir = GramineDir
	}
	return &Gramine{dir: dir}
}

var _ attestation.Issuer = (*Gramine)(nil)

// Insecure is false: the quote is hardware evidence.
func (g *Gramine) Insecure() bool { return false }

// Issue writes reportData to user_report_data and reads the quote back.
func (g *Gramine) Issue(ctx context.Context, reportData [attestation.ReportDataSize]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIssue, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	typ, err := os.ReadFile(filepath.Join(g.dir, "attestation_type"))
	if err != nil {
		return nil, fmt.Errorf("%w: Gramine attestation_type: %w", ErrIssue, err)
	}
	if got := strings.TrimSpace(string(typ)); got != "dcap" {
		return nil, fmt.Errorf("%w: Gramine attestation_type: expected dcap, found %q", ErrIssue, got)
	}
	if err := writeFile(filepath.Join(g.dir, "user_report_data"), reportData[:]); err != nil {
		return nil, fmt.Errorf("%w: Gramine user_report_data: %w", ErrIssue, err)
	}
	quote, err := os.ReadFile(filepath.Join(g.dir, "quote"))
	if err != nil {
		return nil, fmt.Errorf("%w: Gramine quote: %w", ErrIssue, err)
	}
	if len(quote) < reportDataOffset+attestation.ReportDataSize {
		return nil, fmt.Errorf("%w: Gramine quote length: expected at least %d bytes, found %d", ErrIssue, reportDataOffset+attestation.ReportDataSize, len(quote))
	}
	if v := binary.LittleEndian.Uint16(quote); v != 3 {
		return nil, fmt.Errorf("%w: Gramine quote version: expected 3, found %d", ErrIssue, v)
	}
	if got := quote[reportDataOffset : reportDataOffset+attestation.ReportDataSize]; !bytes.Equal(got, reportData[:]) {
		return nil, fmt.Errorf("%w: Gramine quote REPORTDATA: expected %x, found %x", ErrIssue, reportData, got)
	}
	return quote, nil
}

// writeFile writes b to an existing pseudo-file in a single write.
func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0) //nolint:gosec // G304: a configfs-tsm or Gramine pseudo-file under a fixed root
	if err != nil {
		return err
	}
	n, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	if n != len(b) {
		return fmt.Errorf("short write: expected %d bytes, wrote %d", len(b), n)
	}
	return cerr
}

// TSM issues TDX or SEV-SNP reports through a Linux configfs-tsm report
// entry (a folder under /sys/kernel/config/tsm/report created by the
// caller). It is safe for concurrent use within the process; the
// generation counter detects writers in other processes.
type TSM struct {
	dir      string
	provider string
	mu       sync.Mutex
}

// NewTSM returns an issuer for the report entry dir. When provider is not
// empty (for example "tdx_guest" or "sev_guest"), the entry's provider must
// match it.
func NewTSM(dir, provider string) *TSM {
	return &TSM{dir: dir, provider: provider}
}

var _ attestation.Issuer = (*TSM)(nil)

// Insecure is false: the report is hardware evidence.
func (t *TSM) Insecure() bool { return false }

func (t *TSM) generation() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(t.dir, "generation"))
	if err != nil {
		return 0, fmt.Errorf("%w: configfs-tsm generation: %w", ErrIssue, err)
	}
	g, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: configfs-tsm generation: expected a decimal counter, found %q", ErrIssue, strings.TrimSpace(string(b)))
	}
	return g, nil
}

// Issue writes reportData to inblob and returns outblob. The generation
// read after the write must be unchanged after outblob was read.
func (t *TSM) Issue(ctx context.Context, reportData [attestation.ReportDataSize]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIssue, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.provider != "" {
		b, err := os.ReadFile(filepath.Join(t.dir, "provider"))
		if err != nil {
			return nil, fmt.Errorf("%w: configfs-tsm provider: %w", ErrIssue, err)
		}
		if got := strings.TrimSpace(string(b)); got != t.provider {
			return nil, fmt.Errorf("%w: configfs-tsm provider: expected %q, found %q", ErrIssue, t.provider, got)
		}
	}
	if err := writeFile(filepath.Join(t.dir, "inblob"), reportData[:]); err != nil {
		return nil, fmt.Errorf("%w: configfs-tsm inblob: %w", ErrIssue, err)
	}
	before, err := t.generation()
	if err != nil {
		return nil, err
	}
	out, err := os.ReadFile(filepath.Join(t.dir, "outblob"))
	if err != nil {
		return nil, fmt.Errorf("%w: configfs-tsm outblob: %w", ErrIssue, err)
	}
	after, err := t.generation()
	if err != nil {
		return nil, err
	}
	if after != before {
		return nil, fmt.Errorf("%w: configfs-tsm generation: expected %d, found %d (another writer changed the request)", ErrIssue, before, after)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: configfs-tsm outblob: expected a report, found 0 bytes", ErrIssue)
	}
	return out, nil
}
