package coordinator

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/test/issuertest"
)

var (
	signerKey  = bytes.Repeat([]byte{0x51}, 16)
	enclaveKey = bytes.Repeat([]byte{0xe7}, 16)
)

// sealerKey derives the expected AES key independently of deriveSealKey.
func sealerKey(t *testing.T, gramineKey []byte) []byte {
	t.Helper()
	k, err := hkdf.Key(sha256.New, gramineKey, nil, "marblemesh coordinator seal key v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDetectGramine(t *testing.T) {
	full := issuertest.Gramine{Quote: []byte{}, Keys: true, SignerKey: signerKey, EnclaveKey: enclaveKey, AttestationType: "dcap"}
	tests := []struct {
		name      string
		folder    issuertest.Gramine
		mode      SealMode
		wantKey   []byte // the Gramine key the sealer must be derived from
		wantNoTEE bool
		wantErr   []string
	}{
		{name: "quote and keys: ProductKey by default", folder: full, wantKey: signerKey},
		{name: "UniqueKey", folder: full, mode: SealModeUniqueKey, wantKey: enclaveKey},
		{name: "mode in other case", folder: full, mode: "uniquekey", wantKey: enclaveKey},
		{name: "nothing", folder: issuertest.Gramine{}, wantNoTEE: true,
			wantErr: []string{"looked for Gramine's attestation folder", "/quote and ", "/keys/", EnvAttestationDir, "found neither", "OE_SIMULATION=1"}},
		{name: "keys without quote (remote_attestation none)", folder: issuertest.Gramine{Keys: true, SignerKey: signerKey, AttestationType: "none"}, wantNoTEE: true,
			wantErr: []string{"/keys/ exists but ", "/quote does not", `attestation_type "none"`, "gramine-direct", `sgx.remote_attestation = "none"`, `sgx.remote_attestation = "dcap"`, "OE_SIMULATION=1"}},
		{name: "keys without quote (gramine-direct)", folder: issuertest.Gramine{Keys: true, SignerKey: signerKey}, wantNoTEE: true,
			wantErr: []string{"/quote does not", "attestation_type unreadable", "gramine-direct"}},
		{name: "quote without keys", folder: issuertest.Gramine{Quote: []byte{}, AttestationType: "dcap"}, wantNoTEE: true,
			wantErr: []string{"/keys/ does not", "cannot seal"}},
		{name: "bad seal mode", folder: full, mode: "Disabled", wantErr: []string{EnvSealMode, `"Disabled"`, "ProductKey or UniqueKey"}},
		{name: "short key", folder: issuertest.Gramine{Quote: []byte{}, Keys: true, SignerKey: make([]byte, 15)},
			wantErr: []string{"keys/_sgx_mrsigner: expected 16 bytes, found 15"}},
		{name: "long key", folder: issuertest.Gramine{Quote: []byte{}, Keys: true, EnclaveKey: make([]byte, 32)}, mode: SealModeUniqueKey,
			wantErr: []string{"keys/_sgx_mrenclave: expected 16 bytes, found 32"}},
		{name: "key of the mode missing", folder: issuertest.Gramine{Quote: []byte{}, Keys: true, EnclaveKey: enclaveKey},
			wantErr: []string{"reading the Gramine sealing key for " + EnvSealMode + "=ProductKey", "_sgx_mrsigner"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.folder.Create(t)
			g, err := detectGramine(dir, tc.mode)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("detected a TEE, want an error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if errors.Is(err, ErrNoTEE) != tc.wantNoTEE {
					t.Errorf("errors.Is(err, ErrNoTEE) = %v, want %v", !tc.wantNoTEE, tc.wantNoTEE)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := g.issuer.(*issuer.Gramine); !ok {
				t.Fatalf("issuer is %T, want *issuer.Gramine", g.issuer)
			}
			// The detected sealer opens what a sealer keyed from the mode's
			// file sealed, and nothing sealed under the other file.
			want := seal.AESGCMSealer{Key: sealerKey(t, tc.wantKey)}
			sealed, err := want.Seal([]byte("data key"), []byte("ad"))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := g.sealer.Unseal(sealed, []byte("ad")); err != nil || string(got) != "data key" {
				t.Fatalf("sealer is not keyed from the mode's key file: %v", err)
			}
			other := signerKey
			if bytes.Equal(tc.wantKey, signerKey) {
				other = enclaveKey
			}
			wrong, _ := seal.AESGCMSealer{Key: sealerKey(t, other)}.Seal([]byte("data key"), []byte("ad"))
			if _, err := g.sealer.Unseal(wrong, []byte("ad")); !errors.Is(err, seal.ErrAuthentication) {
				t.Fatalf("sealer opened a value sealed under the other key: %v", err)
			}
		})
	}
}

func TestDetectGramineStatErrors(t *testing.T) {
	dir := t.TempDir()
	// A folder named quote, or a file named keys, is not Gramine's layout.
	if err := os.Mkdir(filepath.Join(dir, "quote"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := detectGramine(dir, ""); err == nil || !strings.Contains(err.Error(), "quote is not a file") {
		t.Fatalf("quote folder: %v", err)
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := detectGramine(dir, ""); err == nil || !strings.Contains(err.Error(), "keys is not a folder") {
		t.Fatalf("keys file: %v", err)
	}
}

func TestDeriveSealKey(t *testing.T) {
	a, err := deriveSealKey(signerKey)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := deriveSealKey(bytes.Clone(signerKey))
	b, _ := deriveSealKey(enclaveKey)
	if len(a) != seal.KeySize || !bytes.Equal(a, again) || bytes.Equal(a, b) || bytes.Contains(a, signerKey) {
		t.Fatalf("derived keys: %x %x %x", a, again, b)
	}
	if !bytes.Equal(a, sealerKey(t, signerKey)) {
		t.Fatal("the derivation differs from HKDF-SHA256(key, no salt, info \"marblemesh coordinator seal key v1\", 32 bytes)")
	}
}

func TestParseSealMode(t *testing.T) {
	for in, want := range map[string]SealMode{"": SealModeProductKey, "ProductKey": SealModeProductKey, "PRODUCTKEY": SealModeProductKey, " uniqueKey ": SealModeUniqueKey} {
		if got, err := ParseSealMode(in); err != nil || got != want {
			t.Errorf("ParseSealMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"Disabled", "product", "1"} {
		if _, err := ParseSealMode(in); err == nil || !strings.Contains(err.Error(), EnvSealMode) {
			t.Errorf("ParseSealMode(%q) = %v, want an error naming %s", in, err, EnvSealMode)
		}
	}
}

type insecureSealer struct{ seal.SimulationSealer }

type noIssuer struct{}

func (noIssuer) Issue(context.Context, [attestation.ReportDataSize]byte) ([]byte, error) {
	return nil, errors.New("unused")
}
func (noIssuer) Insecure() bool { return false }

type noVerifier struct{}

func (noVerifier) Verify(context.Context, []byte) (*attestation.Claims, error) {
	return nil, errors.New("unused")
}

func TestSelectPlatform(t *testing.T) {
	gramine := issuertest.Gramine{Quote: []byte{}, Keys: true, SignerKey: signerKey, EnclaveKey: enclaveKey, AttestationType: "dcap"}.Create(t)
	confDir := t.TempDir()
	conf := func(name, content string) string {
		p := filepath.Join(confDir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pccs := conf("pccs.conf", `{"pccs_url":"https://pccs.example:8081/sgx/certification/v4/","use_secure_cert":false}`)
	broken := conf("broken.conf", `{"pccs_url":`)
	aes := seal.AESGCMSealer{Key: make([]byte, seal.KeySize)}
	tests := []struct {
		name      string
		cfg       Config
		wantTEE   string
		wantNotes []string
		wantErr   string
		check     func(t *testing.T, p *platform)
	}{
		{name: "simulation", cfg: Config{Simulation: true}, wantTEE: "simulation", check: func(t *testing.T, p *platform) {
			if !p.issuer.Insecure() || !p.sealer.Insecure() || p.verifier != nil {
				t.Fatalf("simulation platform %+v", p)
			}
		}},
		{name: "simulation with an issuer", cfg: Config{Simulation: true, Issuer: noIssuer{}}, wantErr: "simulation mode, which uses neither"},
		{name: "gramine with QCNL file", cfg: Config{AttestationDir: gramine, QCNLConf: pccs}, wantTEE: TEEGramineSGX,
			wantNotes: []string{"sealMode=ProductKey", "sealKeyFile=" + filepath.Join(gramine, "keys", "_sgx_mrsigner"), "qcnlConf=" + pccs, "collateral=https://pccs.example:8081 (TLS certificate not checked)"},
			check: func(t *testing.T, p *platform) {
				if _, ok := p.issuer.(*issuer.Gramine); !ok {
					t.Fatalf("issuer %T", p.issuer)
				}
				if _, ok := p.verifier.(*sgx.Verifier); !ok {
					t.Fatalf("verifier %T", p.verifier)
				}
			}},
		{name: "gramine without QCNL file uses Intel PCS", cfg: Config{AttestationDir: gramine, QCNLConf: filepath.Join(confDir, "absent.conf")}, wantTEE: TEEGramineSGX,
			wantNotes: []string{"qcnlConf=" + filepath.Join(confDir, "absent.conf") + " (absent)", "collateral=" + sgx.IntelPCSURL}},
		{name: "malformed QCNL file", cfg: Config{AttestationDir: gramine, QCNLConf: broken}, wantErr: broken},
		{name: "injected issuer and verifier, Gramine sealer", cfg: Config{AttestationDir: gramine, Issuer: noIssuer{}, Verifier: noVerifier{}, SealMode: SealModeUniqueKey},
			wantTEE: TEEGramineSGX, wantNotes: []string{"sealMode=UniqueKey"}, check: func(t *testing.T, p *platform) {
				if _, ok := p.issuer.(noIssuer); !ok {
					t.Fatalf("issuer %T", p.issuer)
				}
			}},
		{name: "everything injected needs no TEE", cfg: Config{AttestationDir: t.TempDir(), Issuer: noIssuer{}, Sealer: aes, Verifier: noVerifier{}, TEE: "test-tee"}, wantTEE: "test-tee"},
		{name: "no TEE", cfg: Config{AttestationDir: t.TempDir()}, wantErr: "found neither"},
		{name: "insecure issuer", cfg: Config{AttestationDir: gramine, Issuer: attestation.SimulationIssuer{}}, wantErr: "issuer is insecure"},
		{name: "insecure sealer", cfg: Config{AttestationDir: gramine, Sealer: insecureSealer{}}, wantErr: "sealer is insecure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := selectPlatform(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.tee != tc.wantTEE {
				t.Fatalf("TEE %q, want %q", p.tee, tc.wantTEE)
			}
			var notes []string
			for i := 0; i+1 < len(p.notes); i += 2 {
				notes = append(notes, p.notes[i].(string)+"="+p.notes[i+1].(string))
			}
			for _, w := range tc.wantNotes {
				if !strings.Contains(strings.Join(notes, "\n")+"\n", w+"\n") {
					t.Errorf("notes %q lack %q", notes, w)
				}
			}
			for _, n := range notes {
				for _, key := range [][]byte{signerKey, enclaveKey, sealerKey(t, signerKey), sealerKey(t, enclaveKey)} {
					if strings.Contains(n, string(key)) || strings.Contains(strings.ToLower(n), hex.EncodeToString(key)) {
						t.Errorf("note %q carries key material", n)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}
