package cli

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// SGX SIGSTRUCT layout (Intel SDM vol. 3D, "Enclave Signature Structure").
const (
	sigStructSize         = 1808
	sigStructHeader2Off   = 24
	sigStructModulusOff   = 128
	sigStructModulusSize  = 384
	sigStructEnclaveHash  = 960
	sigStructISVProdIDOff = 1024
	sigStructISVSVNOff    = 1026
)

// sigStructHeader and sigStructHeader2 are the fixed bytes at offsets 0
// and 24 of every SIGSTRUCT; they locate it inside larger files.
func sigStructHeader() []byte {
	return []byte{0x06, 0, 0, 0, 0xe1, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0}
}

func sigStructHeader2() []byte {
	return []byte{0x01, 0x01, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 0x01, 0, 0, 0}
}

// packageInfo is an enclave's identity as a manifest Package states it.
type packageInfo struct {
	UniqueID        string
	SignerID        string
	ProductID       uint16
	SecurityVersion uint16
}

// findSigStruct returns the first SIGSTRUCT in data.
func findSigStruct(data []byte) ([]byte, bool) {
	h1, h2 := sigStructHeader(), sigStructHeader2()
	for off := 0; ; {
		i := bytes.Index(data[off:], h1)
		if i < 0 {
			return nil, false
		}
		start := off + i
		if start+sigStructSize <= len(data) && bytes.Equal(data[start+sigStructHeader2Off:start+sigStructHeader2Off+len(h2)], h2) {
			return data[start : start+sigStructSize], true
		}
		off = start + 1
	}
}

// parseSigStruct reads the identity from a SIGSTRUCT. MRSIGNER is the
// SHA-256 of the signer's RSA modulus as SIGSTRUCT stores it
// (little-endian).
func parseSigStruct(s []byte) packageInfo {
	signer := sha256.Sum256(s[sigStructModulusOff : sigStructModulusOff+sigStructModulusSize])
	return packageInfo{
		UniqueID:        hex.EncodeToString(s[sigStructEnclaveHash : sigStructEnclaveHash+32]),
		SignerID:        hex.EncodeToString(signer[:]),
		ProductID:       binary.LittleEndian.Uint16(s[sigStructISVProdIDOff:]),
		SecurityVersion: binary.LittleEndian.Uint16(s[sigStructISVSVNOff:]),
	}
}

// readPackageInfo finds the SIGSTRUCT of an enclave: in an Open Enclave or
// EGo signed ELF (section .oeinfo), in an SGX SDK or Occlum ELF (section
// .note.sgxmeta), or in a Gramine .sig file. A folder is searched for
// Occlum's build/lib/libocclum-libos.signed.so or a single Gramine .sig.
// It returns the identity, the kind of file and the file read.
func readPackageInfo(path string) (packageInfo, string, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return packageInfo{}, "", "", fmt.Errorf("reading the enclave: %w", err)
	}
	if st.IsDir() {
		if path, err = enclaveInDir(path); err != nil {
			return packageInfo{}, "", "", err
		}
	}
	data, err := os.ReadFile(path) //nolint:gosec // G304: the enclave the user named
	if err != nil {
		return packageInfo{}, "", "", fmt.Errorf("reading the enclave: %w", err)
	}
	if bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		info, kind, err := fromELF(path, data)
		return info, kind, path, err
	}
	if len(data) >= sigStructSize && bytes.HasPrefix(data, sigStructHeader()) {
		if s, ok := findSigStruct(data[:sigStructSize]); ok {
			return parseSigStruct(s), "Gramine signature file", path, nil
		}
	}
	return packageInfo{}, "", "", fmt.Errorf("%s is neither a signed enclave (ELF) nor a Gramine .sig file (a %d-byte SIGSTRUCT)", path, sigStructSize)
}

func fromELF(path string, data []byte) (packageInfo, string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return packageInfo{}, "", fmt.Errorf("%s: reading ELF: %w", path, err)
	}
	defer f.Close()
	found := false
	for _, sec := range []struct{ name, kind string }{
		{".oeinfo", "Open Enclave / EGo enclave"},
		{".note.sgxmeta", "SGX SDK / Occlum enclave"},
	} {
		s := f.Section(sec.name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		found = true
		content, err := s.Data()
		if err != nil {
			return packageInfo{}, "", fmt.Errorf("%s: reading section %s: %w", path, sec.name, err)
		}
		if sig, ok := findSigStruct(content); ok {
			return parseSigStruct(sig), sec.kind, nil
		}
	}
	if found {
		return packageInfo{}, "", fmt.Errorf("%s has no SIGSTRUCT: the enclave is not signed yet (sign it, e.g. with 'ego sign' or 'oesign')", path)
	}
	return packageInfo{}, "", fmt.Errorf("%s is an ELF file without an .oeinfo or .note.sgxmeta section: not an SGX enclave", path)
}

// enclaveInDir picks the enclave file of a Gramine or Occlum folder.
func enclaveInDir(dir string) (string, error) {
	occlum := filepath.Join(dir, "build", "lib", "libocclum-libos.signed.so")
	if _, err := os.Stat(occlum); err == nil {
		return occlum, nil
	}
	var sigs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir {
			return fs.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".sig") {
			sigs = append(sigs, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", dir, err)
	}
	sort.Strings(sigs)
	switch len(sigs) {
	case 1:
		return sigs[0], nil
	case 0:
		return "", errors.New(dir + " has neither build/lib/libocclum-libos.signed.so (Occlum) nor a .sig file (Gramine): name the enclave file")
	}
	return "", fmt.Errorf("%s has several .sig files (%s): name the one you mean", dir, strings.Join(sigs, ", "))
}

func newPackageInfoCmd(out *output) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "package-info <enclave-file-or-folder>",
		Short: "Print an enclave's identity (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN), offline",
		Long: `Print the identity of a signed enclave, as a manifest Package states it:
UniqueID (MRENCLAVE), SignerID (MRSIGNER), ProductID (ISVPRODID) and
SecurityVersion (ISVSVN).

Reads an Open Enclave or EGo signed ELF, an SGX SDK or Occlum ELF with a
.note.sgxmeta section, or a Gramine .sig file; a folder is searched for
Occlum's build/lib/libocclum-libos.signed.so or a single .sig file.`,
		Args: exactArgs(1, "<enclave-file-or-folder>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, kind, file, err := readPackageInfo(args[0])
			if err != nil {
				return err
			}
			if format(cmd).json() {
				return printJSON(out.stdout(), info)
			}
			w := out.stdout()
			fmt.Fprintf(w, "Package properties of %s (%s):\n", file, kind)
			fmt.Fprintf(w, "  UniqueID (MRENCLAVE):     %s\n", info.UniqueID)
			fmt.Fprintf(w, "  SignerID (MRSIGNER):      %s\n", info.SignerID)
			fmt.Fprintf(w, "  ProductID (ISVPRODID):    %d\n", info.ProductID)
			fmt.Fprintf(w, "  SecurityVersion (ISVSVN): %d\n", info.SecurityVersion)
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}
