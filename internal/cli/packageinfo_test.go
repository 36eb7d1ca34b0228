package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"testing"
)

// sigStruct builds a SIGSTRUCT whose modulus bytes are all modulusByte.
func sigStruct(enclaveHash byte, modulusByte byte, prodID, svn uint16) []byte {
	s := make([]byte, sigStructSize)
	copy(s, sigStructHeader())
	copy(s[sigStructHeader2Off:], sigStructHeader2())
	copy(s[sigStructModulusOff:], bytes.Repeat([]byte{modulusByte}, sigStructModulusSize))
	copy(s[sigStructEnclaveHash:], bytes.Repeat([]byte{enclaveHash}, 32))
	binary.LittleEndian.PutUint16(s[sigStructISVProdIDOff:], prodID)
	binary.LittleEndian.PutUint16(s[sigStructISVSVNOff:], svn)
	return s
}

// buildELF writes a minimal 64-bit little-endian ELF file with the given
// sections (name → content, type).
func buildELF(sections []elfSection) []byte {
	const ehSize, shEntSize = 64, 64
	shstr := []byte{0}
	nameOff := make([]int, len(sections))
	for i, s := range sections {
		nameOff[i] = len(shstr)
		shstr = append(append(shstr, s.name...), 0)
	}
	shstrName := len(shstr)
	shstr = append(append(shstr, ".shstrtab"...), 0)

	var data bytes.Buffer
	offsets := make([]int, len(sections))
	for i, s := range sections {
		offsets[i] = ehSize + data.Len()
		data.Write(s.content)
	}
	shstrOff := ehSize + data.Len()
	data.Write(shstr)
	for (ehSize+data.Len())%8 != 0 {
		data.WriteByte(0)
	}
	shOff := ehSize + data.Len()
	shNum := len(sections) + 2

	le := binary.LittleEndian
	hdr := make([]byte, ehSize)
	copy(hdr, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(hdr[16:], 3)  // ET_DYN
	le.PutUint16(hdr[18:], 62) // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[40:], uint64(shOff))
	le.PutUint16(hdr[52:], ehSize)
	le.PutUint16(hdr[58:], shEntSize)
	le.PutUint16(hdr[60:], uint16(shNum))
	le.PutUint16(hdr[62:], uint16(shNum-1))

	sh := func(name, typ uint32, off, size int) []byte {
		b := make([]byte, shEntSize)
		le.PutUint32(b[0:], name)
		le.PutUint32(b[4:], typ)
		le.PutUint64(b[24:], uint64(off))
		le.PutUint64(b[32:], uint64(size))
		le.PutUint64(b[48:], 1)
		return b
	}
	var out bytes.Buffer
	out.Write(hdr)
	out.Write(data.Bytes())
	out.Write(make([]byte, shEntSize)) // SHN_UNDEF
	for i, s := range sections {
		out.Write(sh(uint32(nameOff[i]), s.typ, offsets[i], len(s.content)))
	}
	out.Write(sh(uint32(shstrName), 3 /* SHT_STRTAB */, shstrOff, len(shstr)))
	return out.Bytes()
}

type elfSection struct {
	name    string
	typ     uint32
	content []byte
}

const (
	shtProgbits = 1
	shtNote     = 7
)

func TestPackageInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	signer := sha256.Sum256(bytes.Repeat([]byte{0x5a}, sigStructModulusSize))
	wantSigner := hex.EncodeToString(signer[:])

	gramine := e.write("gramine/app.sig", sigStruct(0xaa, 0x5a, 7, 2))
	// A decoy header without HEADER2 precedes the real SIGSTRUCT.
	decoy := append(append([]byte("OE properties"), sigStructHeader()...), make([]byte, 64)...)
	oe := e.write("ego/app", buildELF([]elfSection{
		{".text", shtProgbits, []byte{0x90, 0x90, 0xc3}},
		{".oeinfo", shtProgbits, append(append(decoy, sigStruct(0xbb, 0x5a, 3, 9)...), make([]byte, 100)...)},
	}))
	sgxmeta := e.write("occlum/build/lib/libocclum-libos.signed.so", buildELF([]elfSection{
		{".note.sgxmeta", shtNote, append([]byte("\x0d\x00\x00\x00sgx_metadata\x00"), sigStruct(0xcc, 0x5a, 1, 1)...)},
	}))

	for _, tc := range []struct {
		name, path string
		want       packageInfo
	}{
		{"gramine_sig", gramine, packageInfo{hex.EncodeToString(bytes.Repeat([]byte{0xaa}, 32)), wantSigner, 7, 2}},
		{"gramine_dir", e.path("gramine"), packageInfo{hex.EncodeToString(bytes.Repeat([]byte{0xaa}, 32)), wantSigner, 7, 2}},
		{"oe_elf", oe, packageInfo{hex.EncodeToString(bytes.Repeat([]byte{0xbb}, 32)), wantSigner, 3, 9}},
		{"sgxmeta_elf", sgxmeta, packageInfo{hex.EncodeToString(bytes.Repeat([]byte{0xcc}, 32)), wantSigner, 1, 1}},
		{"occlum_dir", e.path("occlum"), packageInfo{hex.EncodeToString(bytes.Repeat([]byte{0xcc}, 32)), wantSigner, 1, 1}},
	} {
		var got packageInfo
		if err := json.Unmarshal([]byte(e.ok("package-info", tc.path, "--format", "json").stdout), &got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
		e.golden("package_info_"+tc.name, e.ok("package-info", tc.path).stdout)
	}

	unsigned := e.write("unsigned", buildELF([]elfSection{{".oeinfo", shtProgbits, make([]byte, 4096)}}))
	e.fail([]string{"no SIGSTRUCT", "not signed"}, "package-info", unsigned)
	plainELF := e.write("plain", buildELF([]elfSection{{".text", shtProgbits, []byte{0xc3}}}))
	e.fail([]string{"without an .oeinfo or .note.sgxmeta section"}, "package-info", plainELF)
	junk := e.write("junk.sig", []byte("not a signature"))
	e.fail([]string{"neither a signed enclave (ELF) nor a Gramine .sig file"}, "package-info", junk)
	e.write("two/a.sig", sigStruct(1, 1, 1, 1))
	e.write("two/b.sig", sigStruct(2, 2, 2, 2))
	e.fail([]string{"several .sig files"}, "package-info", e.path("two"))
	e.write("empty/readme", []byte("x"))
	e.fail([]string{"name the enclave file"}, "package-info", e.path("empty"))
	e.fail([]string{"no such file or directory"}, "package-info", e.path("nothing"))
}
