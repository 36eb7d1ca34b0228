package coordinator

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// ErrNoTEE is returned when the Coordinator is asked to run outside
// simulation on a platform for which it has no evidence issuer. The
// returned error says what was looked for.
var ErrNoTEE = errors.New("no trusted execution environment is available to this Coordinator: it cannot produce evidence or seal its state")

// simulationHint ends every ErrNoTEE message.
const simulationHint = "Set OE_SIMULATION=1 (or pass --simulation) to run in simulation mode, which performs no attestation and is INSECURE"

// TEEGramineSGX names a Coordinator running under gramine-sgx.
const TEEGramineSGX = "gramine-sgx"

// SealMode chooses which Gramine sealing key protects the state. The
// manifest's Config.SealMode rules once a manifest is set; this one is the
// default before that and when the manifest leaves SealMode empty.
type SealMode = seal.Mode

// Seal modes the Coordinator can be configured with, with MarbleRun's
// names. Disabled is the manifest's choice only.
const (
	// SealModeProductKey seals with the MRSIGNER-bound key
	// (keys/_sgx_mrsigner): enclaves of the same signer, including later
	// versions, can unseal.
	SealModeProductKey = seal.ModeProductKey
	// SealModeUniqueKey seals with the MRENCLAVE-bound key
	// (keys/_sgx_mrenclave): only this exact enclave can unseal.
	SealModeUniqueKey = seal.ModeUniqueKey
)

// ParseSealMode accepts ProductKey or UniqueKey in any case; empty means
// ProductKey.
func ParseSealMode(s string) (SealMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "productkey":
		return SealModeProductKey, nil
	case "uniquekey":
		return SealModeUniqueKey, nil
	}
	return "", fmt.Errorf("%s=%q: want ProductKey or UniqueKey", EnvSealMode, s)
}

// gramineKeyFile is the file of the mode's key under keys/.
func gramineKeyFile(m SealMode) string {
	if m == SealModeUniqueKey {
		return "_sgx_mrenclave"
	}
	return "_sgx_mrsigner"
}

// gramineKeySize is the size of Gramine's SGX sealing keys (EGETKEY).
const gramineKeySize = 16

// sealKeyInfo is the HKDF info of the AES-256 key derived from a Gramine
// sealing key. Changing it makes every sealed state unreadable.
const sealKeyInfo = "marblemesh coordinator seal key v1"

// deriveSealKey derives the AES-256-GCM key from a 16-byte Gramine sealing
// key: HKDF-SHA256 with the Gramine key as input keying material, no salt
// and sealKeyInfo as info. The salt adds nothing here: the input is already
// a uniformly random key, and fixing it keeps the derivation stable.
func deriveSealKey(gramineKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, gramineKey, nil, sealKeyInfo, seal.KeySize)
}

// gramineTEE is what the Coordinator takes from a Gramine attestation
// folder.
type gramineTEE struct {
	issuer attestation.Issuer
	// sealer is the sealer of the configured mode, keyFile its key.
	sealer  seal.Sealer
	keyFile string
	// sealers holds the sealer of every mode whose key could be read;
	// unavailable says why the other mode's is missing, if it is.
	sealers     map[SealMode]seal.Sealer
	unavailable string
}

// detectGramine looks for Gramine's attestation folder in dir: quote
// (present only with sgx.remote_attestation = "dcap") and keys/. It reads
// the sealing key of mode and derives the sealer's key from it. It wraps
// ErrNoTEE when the folder shows no usable Gramine.
func detectGramine(dir string, mode SealMode) (*gramineTEE, error) {
	mode, err := ParseSealMode(string(mode))
	if err != nil {
		return nil, err
	}
	f, err := issuer.InspectGramine(dir)
	if err != nil {
		return nil, err
	}
	quotePath, keysPath := f.QuotePath, f.KeysPath
	switch {
	case !f.HasQuote && !f.HasKeys:
		return nil, fmt.Errorf("%w: looked for Gramine's attestation folder (%s and %s/; %s names another folder) and found neither. %s",
			ErrNoTEE, quotePath, keysPath, EnvAttestationDir, simulationHint)
	case !f.HasQuote:
		return nil, fmt.Errorf("%w: %s/ exists but %s does not (attestation_type %s): Gramine runs without remote attestation "+
			"(gramine-direct, or gramine-sgx with sgx.remote_attestation = \"none\"), so the Coordinator could seal but not prove what it is. "+
			"Run under gramine-sgx with sgx.remote_attestation = \"dcap\", or: %s",
			ErrNoTEE, keysPath, quotePath, f.AttestationType(), simulationHint)
	case !f.HasKeys:
		return nil, fmt.Errorf("%w: %s exists but %s/ does not: without Gramine's sealing keys the Coordinator cannot seal its state. %s",
			ErrNoTEE, quotePath, keysPath, simulationHint)
	}
	keyFile := filepath.Join(keysPath, gramineKeyFile(mode))
	sealer, err := gramineSealer(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the Gramine sealing key for %s=%s: %w", EnvSealMode, mode, err)
	}
	g := &gramineTEE{issuer: f.Issuer(), sealer: sealer, keyFile: keyFile, sealers: map[SealMode]seal.Sealer{mode: sealer}}
	// A manifest may choose the other mode: its key is read now, and a
	// manifest asking for it is refused if it cannot be.
	other := SealModeUniqueKey
	if mode == SealModeUniqueKey {
		other = SealModeProductKey
	}
	if s, err := gramineSealer(filepath.Join(keysPath, gramineKeyFile(other))); err == nil {
		g.sealers[other] = s
	} else {
		g.unavailable = fmt.Sprintf("seal mode %s is unavailable: %v", other, err)
	}
	return g, nil
}

// gramineSealer derives an AES-GCM sealer from the Gramine sealing key in
// keyFile.
func gramineSealer(keyFile string) (seal.Sealer, error) {
	key, err := os.ReadFile(keyFile) //nolint:gosec // G304: Gramine's sealing-key pseudo-file, or the operator's override
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if len(key) != gramineKeySize {
		return nil, fmt.Errorf("Gramine sealing key %s: expected %d bytes, found %d", keyFile, gramineKeySize, len(key))
	}
	aesKey, err := deriveSealKey(key)
	if err != nil {
		return nil, fmt.Errorf("deriving the seal key from %s: %w", keyFile, err)
	}
	defer clear(aesKey)
	return seal.NewAESGCMSealer(aesKey)
}

// platform is what the Coordinator attests, seals and verifies with.
type platform struct {
	tee    string
	issuer attestation.Issuer
	sealer seal.Sealer
	// sealers seal in each seal mode the platform offers; sealer is the
	// one of the configured mode.
	sealers  map[SealMode]seal.Sealer
	verifier attestation.Verifier
	// notes are log attributes describing the choices; never key material.
	notes []any
}

// selectPlatform chooses the issuer, sealer and verifier from cfg: the
// simulation ones in simulation; otherwise those injected in cfg, the rest
// from the detected Gramine and the DCAP configuration. It fails closed:
// outside simulation nothing insecure is accepted.
func selectPlatform(cfg Config) (*platform, error) {
	if cfg.Simulation {
		if cfg.Issuer != nil || cfg.Verifier != nil {
			return nil, errors.New("an evidence issuer or verifier was configured in simulation mode, which uses neither")
		}
		p := &platform{tee: core.TEESimulation, issuer: attestation.SimulationIssuer{}, sealer: seal.SimulationSealer{}}
		if cfg.Sealer != nil {
			p.sealer = cfg.Sealer
		}
		// The modes are recorded and reported; in simulation one sealer
		// serves both.
		p.sealers = map[SealMode]seal.Sealer{SealModeProductKey: p.sealer, SealModeUniqueKey: p.sealer}
		return p, nil
	}
	p := &platform{tee: cfg.TEE, issuer: cfg.Issuer, sealer: cfg.Sealer, verifier: cfg.Verifier}
	if p.issuer == nil || p.sealer == nil {
		g, err := detectGramine(cfg.AttestationDir, cfg.SealMode)
		if err != nil {
			return nil, err
		}
		if p.tee == "" {
			p.tee = TEEGramineSGX
		}
		if p.issuer == nil {
			p.issuer = g.issuer
		}
		if p.sealer == nil {
			mode, _ := ParseSealMode(string(cfg.SealMode))
			p.sealer, p.sealers = g.sealer, g.sealers
			p.notes = append(p.notes, "sealMode", string(mode), "sealKeyFile", g.keyFile)
			if g.unavailable != "" {
				p.notes = append(p.notes, "sealModeUnavailable", g.unavailable)
			}
		}
	}
	if p.sealers == nil {
		p.sealers = map[SealMode]seal.Sealer{SealModeProductKey: p.sealer, SealModeUniqueKey: p.sealer}
	}
	if p.issuer.Insecure() {
		return nil, errors.New("the evidence issuer is insecure but simulation mode is off")
	}
	if p.sealer.Insecure() {
		return nil, errors.New("the sealer is insecure but simulation mode is off")
	}
	if p.verifier == nil {
		path := cfg.QCNLConf
		if path == "" {
			path = sgx.DefaultQCNLConfPath
		}
		src, found, err := sgx.ReadQCNLConf(path)
		if err != nil {
			return nil, err
		}
		v, err := sgx.NewDCAPVerifier(src, sgx.Options{})
		if err != nil {
			return nil, fmt.Errorf("creating the marble quote verifier from %s: %w", path, err)
		}
		p.verifier = v
		if !found {
			path += " (absent)"
		}
		p.notes = append(p.notes, "qcnlConf", path, "collateral", src.String())
	}
	return p, nil
}
