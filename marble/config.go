package marble

import (
	"crypto/elliptic"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// Environment variables read by ConfigFromEnv.
const (
	// EnvMarbleType names the marble in the manifest's Marbles section (required).
	EnvMarbleType = marbleenv.MarbleType
	// EnvCoordinatorAddr is the Coordinator's mesh API address, host:port.
	EnvCoordinatorAddr = marbleenv.CoordinatorAddr
	// EnvDNSNames is a comma-separated list of names for the marble's
	// certificate; IP literals become IP addresses.
	EnvDNSNames = marbleenv.DNSNames
	// EnvUUIDFile is the file that holds the marble's UUID.
	EnvUUIDFile = marbleenv.UUIDFile
	// EnvSimulation set to "1" selects simulation: no attestation (insecure).
	EnvSimulation = marbleenv.Simulation
	// EnvAttestationDir names Gramine's attestation folder, where an SGX
	// marble under gramine-sgx obtains its quote (default /dev/attestation).
	EnvAttestationDir = marbleenv.AttestationDir
	// EnvLogFormat set to "json" selects JSON log lines, the Coordinator's
	// format, for NewLogger and PreMain; anything else selects text.
	EnvLogFormat = marbleenv.LogFormat
)

// NewLogger returns a logger that writes to w in the format the variable
// EnvLogFormat selects through getenv: JSON lines like the Coordinator's
// for "json", slog's text lines otherwise. Durations read like "1.5s" in
// both.
func NewLogger(getenv func(string) string, w io.Writer) *slog.Logger {
	return logging.New(w, getenv(EnvLogFormat))
}

// Defaults applied by ConfigFromEnv and Activate.
const (
	DefaultCoordinatorAddr = "localhost:2001"
	DefaultDNSName         = "localhost"
	DefaultUUIDFileName    = "uuid"
	DefaultRetryTimeout    = 60 * time.Second
	DefaultRetryBackoff    = 250 * time.Millisecond
)

// maxRetryBackoff caps the doubling wait between two activation attempts.
const maxRetryBackoff = 8 * time.Second

// Config says how a marble activates.
type Config struct {
	// MarbleType is the marble's name in the manifest.
	MarbleType string
	// CoordinatorAddr is the Coordinator's mesh API address, host:port.
	CoordinatorAddr string
	// DNSNames go into the marble's certificate and CSR. Entries that are
	// IP literals become IP addresses. 127.0.0.1 and ::1 are always added.
	DNSNames []string
	// UUIDFile holds the marble's UUID. It is created when missing.
	UUIDFile string
	// Curve of the marble's ECDSA key. Nil means P-256.
	Curve elliptic.Curve
	// Issuer produces the evidence sent to the Coordinator. Nil makes
	// Activate fail with ErrNoIssuer before it contacts the Coordinator.
	Issuer attestation.Issuer
	// RetryTimeout bounds the total time spent retrying while the
	// Coordinator is unreachable or not ready. Zero means DefaultRetryTimeout.
	RetryTimeout time.Duration
	// RetryBackoff is the first wait between attempts; it doubles after
	// every attempt up to 8 s. Zero means DefaultRetryBackoff.
	RetryBackoff time.Duration
	// Logger receives progress messages. Nil means slog.Default().
	Logger *slog.Logger
}

// ConfigFromEnv builds a Config from environment variables read through
// getenv (os.Getenv in production):
//
//   - EDG_MARBLE_TYPE: required.
//   - EDG_MARBLE_COORDINATOR_ADDR: default localhost:2001.
//   - EDG_MARBLE_DNS_NAMES: comma list, default localhost.
//   - EDG_MARBLE_UUID_FILE: default "uuid" in the working directory.
//   - OE_SIMULATION and EDG_MARBLE_ATTESTATION_DIR choose the Issuer
//     (see IssuerFromEnv): "1" selects the insecure simulation; otherwise
//     Gramine's issuer when its quote file exists (default folder
//     /dev/attestation). With neither, ConfigFromEnv fails closed with an
//     error wrapping ErrNoTEE.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		MarbleType:      strings.TrimSpace(getenv(EnvMarbleType)),
		CoordinatorAddr: strings.TrimSpace(getenv(EnvCoordinatorAddr)),
		DNSNames:        splitNames(getenv(EnvDNSNames)),
		UUIDFile:        strings.TrimSpace(getenv(EnvUUIDFile)),
	}
	if cfg.MarbleType == "" {
		return Config{}, fmt.Errorf("%s is not set: it must name the marble in the manifest", EnvMarbleType)
	}
	if cfg.CoordinatorAddr == "" {
		cfg.CoordinatorAddr = DefaultCoordinatorAddr
	}
	if len(cfg.DNSNames) == 0 {
		cfg.DNSNames = []string{DefaultDNSName}
	}
	if cfg.UUIDFile == "" {
		wd, err := os.Getwd()
		if err != nil {
			return Config{}, fmt.Errorf("locating the default UUID file: %w", err)
		}
		cfg.UUIDFile = filepath.Join(wd, DefaultUUIDFileName)
	}
	if err := cfg.check(); err != nil {
		return Config{}, err
	}
	iss, err := IssuerFromEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	cfg.Issuer = iss
	return cfg, nil
}

// splitNames splits a comma list and drops blanks.
func splitNames(list string) []string {
	var names []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// check reports a configuration that cannot work. A missing Issuer is
// reported by Activate instead (ConfigFromEnv always sets one).
func (c Config) check() error {
	if c.MarbleType == "" {
		return fmt.Errorf("marble type is empty (set %s)", EnvMarbleType)
	}
	if _, _, err := net.SplitHostPort(c.CoordinatorAddr); err != nil {
		return fmt.Errorf("coordinator address %q (%s) is not host:port: %w", c.CoordinatorAddr, EnvCoordinatorAddr, err)
	}
	if c.UUIDFile == "" {
		return fmt.Errorf("UUID file path is empty (set %s)", EnvUUIDFile)
	}
	for _, n := range c.DNSNames {
		if strings.ContainsAny(n, " \t\r\n") {
			return fmt.Errorf("DNS name %q (%s) contains white space", n, EnvDNSNames)
		}
	}
	if c.RetryTimeout < 0 || c.RetryBackoff < 0 {
		return fmt.Errorf("retry timeout and backoff must not be negative")
	}
	return nil
}

func (c Config) curve() elliptic.Curve {
	if c.Curve == nil {
		return elliptic.P256()
	}
	return c.Curve
}

func (c Config) retryTimeout() time.Duration {
	if c.RetryTimeout == 0 {
		return DefaultRetryTimeout
	}
	return c.RetryTimeout
}

func (c Config) retryBackoff() time.Duration {
	if c.RetryBackoff == 0 {
		return DefaultRetryBackoff
	}
	return c.RetryBackoff
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// hostNames splits DNSNames into names and IP addresses and adds the
// loopback addresses, without duplicates.
func (c Config) hostNames() ([]string, []net.IP) {
	var names []string
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	seenName := map[string]bool{}
	for _, n := range c.DNSNames {
		if ip := net.ParseIP(n); ip != nil {
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			dup := false
			for _, have := range ips {
				if have.Equal(ip) {
					dup = true
					break
				}
			}
			if !dup {
				ips = append(ips, ip)
			}
			continue
		}
		if !seenName[n] {
			seenName[n] = true
			names = append(names, n)
		}
	}
	return names, ips
}
