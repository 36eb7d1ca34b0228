package coordinator

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/marblemesh/marblemesh/internal/attestation"
	"github.com/marblemesh/marblemesh/internal/attestation/issuer"
	"github.com/marblemesh/marblemesh/internal/attestation/sgx"
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

// SealMode chooses which Gramine sealing key protects the state.
type SealMode string

// Seal modes, with MarbleRun's names.
const (
	// SealModeProductKey seals with the MRSIGNER-bound key
	// (keys/_sgx_mrsigner): enclaves of the same signer, including later
	// versions, can unseal.
	SealModeProductKey SealMode = "ProductKey"
	// SealModeUniqueKey seals with the MRENCLAVE-bound key
	// (keys/_sgx_mrenclave): only this exact enclave can unseal.
	SealModeUniqueKey SealMode = "UniqueKey"
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
func (m SealMode) gramineKeyFile() string {
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
	issuer  attestation.Issuer
	sealer  seal.Sealer
	keyFile string
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
	keyFile := filepath.Join(keysPath, mode.gramineKeyFile())
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the Gramine sealing key for %s=%s: %w", EnvSealMode, mode, err)
	}
	if len(key) != gramineKeySize {
		return nil, fmt.Errorf("Gramine sealing key %s: expected %d bytes, found %d", keyFile, gramineKeySize, len(key))
	}
	aesKey, err := deriveSealKey(key)
	if err != nil {
		return nil, fmt.Errorf("deriving the seal key from %s: %w", keyFile, err)
	}
	sealer, err := seal.NewAESGCMSealer(aesKey)
	if err != nil {
		return nil, err
	}
	clear(key)
	clear(aesKey)
	return &gramineTEE{issuer: f.Issuer(), sealer: sealer, keyFile: keyFile}, nil
}

// platform is what the Coordinator attests, seals and verifies with.
type platform struct {
	tee      string
	issuer   attestation.Issuer
	sealer   seal.Sealer
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
			p.sealer = g.sealer
			p.notes = append(p.notes, "sealMode", string(mode), "sealKeyFile", g.keyFile)
		}
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
