// Package coordinator assembles the Coordinator: configuration, the sealed
// store, the core, and the client API, mesh API and metrics servers.
package coordinator

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/internal/coordinator/keyapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// Environment variables the Coordinator reads, with MarbleRun's names.
const (
	EnvMeshAddr          = "EDG_COORDINATOR_MESH_ADDR"
	EnvClientAddr        = "EDG_COORDINATOR_CLIENT_ADDR"
	EnvPrometheusAddr    = "EDG_COORDINATOR_PROMETHEUS_ADDR"
	EnvDNSNames          = "EDG_COORDINATOR_DNS_NAMES"
	EnvSealDir           = "EDG_COORDINATOR_SEAL_DIR"
	EnvStartupManifest   = "EDG_STARTUP_MANIFEST"
	EnvDebugLogging      = "EDG_DEBUG_LOGGING"
	EnvHTTPErrorLogLevel = "EDG_HTTP_ERROR_LOG_LEVEL"
	EnvCWD               = "EDG_CWD"
	EnvSimulation        = "OE_SIMULATION"

	// Settings of a Coordinator outside simulation (not MarbleRun's).
	EnvAttestationDir = "EDG_COORDINATOR_ATTESTATION_DIR"
	EnvSealMode       = "EDG_COORDINATOR_SEAL_MODE"
	EnvQCNLConf       = "EDG_COORDINATOR_QCNL_CONF"

	// Settings of a Coordinator whose state lives in the Kubernetes API.
	EnvDistributed  = "EDG_DISTRIBUTED_COORDINATOR"
	EnvStoreBackend = "EDG_STORE_BACKEND"
	EnvK8sStateName = "EDG_K8S_STATE_NAME"
	EnvK8sNamespace = "EDG_K8S_NAMESPACE"
	EnvK8sKEKMap    = "EDG_K8S_KEK_MAP"
	// EnvImportSealDir, in distributed mode, names the seal folder of a
	// single Coordinator whose state is imported at start when there is
	// no shared state yet.
	EnvImportSealDir = "EDG_COORDINATOR_IMPORT_SEAL_DIR"
	// EnvKubeconfig, in distributed mode, names a kubeconfig file that
	// replaces the in-cluster configuration (outside a cluster, in tests).
	EnvKubeconfig = "KUBECONFIG"
	// The key API between replicas (distributed mode only): its listen
	// address and the Service whose EndpointSlices list the replicas.
	EnvKeyAPIAddr     = "EDG_COORDINATOR_KEY_API_ADDR"
	EnvK8sServiceName = "EDG_K8S_SERVICE_NAME"
	// EnvPodIP is the Pod's IP from the downward API, read in distributed
	// mode to leave the replica itself out of its peers.
	EnvPodIP = "POD_IP"
	// EnvPodName names this Coordinator in status (set from the Pod's
	// name in a cluster; the host name when unset) and, in distributed
	// mode, leaves it out of its peers.
	EnvPodName = "POD_NAME"
)

// DefaultKeyAPIAddr is the key API's listen address in distributed mode.
const DefaultKeyAPIAddr = ":5433"

// Store backends.
const (
	// StoreFile keeps the sealed state in SealDir (the default).
	StoreFile = "file"
	// StoreK8sSecret keeps the sealed state in Secrets of one namespace
	// (distributed mode only).
	StoreK8sSecret = "k8s-secret"
)

// serviceAccountNamespaceFile holds the Pod's namespace in a cluster.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Config is the Coordinator's process configuration.
type Config struct {
	// MeshAddr is where the gRPC mesh API listens (marbles activate here).
	MeshAddr string
	// ClientAddr is where the HTTPS client API listens.
	ClientAddr string
	// PrometheusAddr, if set, serves /metrics and /events over plain HTTP.
	PrometheusAddr string
	// DNSNames are written into the CA certificates; IPs become IP SANs.
	DNSNames []string
	// SealDir holds the sealed state of the file store.
	SealDir string
	// Store is the store backend: StoreFile (also when empty) or
	// StoreK8sSecret, which keeps the state in Secrets named after
	// KubeStateName in KubeNamespace and reaches the Kubernetes API with
	// the kubeconfig file Kubeconfig, or the in-cluster configuration
	// when that is empty.
	Store         string
	KubeStateName string
	KubeNamespace string
	// KubeKEKMapName names the ConfigMap in KubeNamespace that holds the
	// state's key-encryption key sealed for each platform.
	KubeKEKMapName string
	Kubeconfig     string
	// KeyAPIAddr is where the key API between replicas listens; it is set
	// in distributed mode only, where it is required. KeyAPIService is
	// the Service whose EndpointSlices list the replicas' key API
	// (keyapi.DefaultServiceName if empty). PodIP and ReplicaName
	// identify this replica among them (either may be empty).
	KeyAPIAddr    string
	KeyAPIService string
	PodIP         string
	// KeyAPIInterval is the pause between rounds of asking peers for the
	// key while this replica needs one; 0 means keyapi.DefaultInterval.
	// KeyAPIDial, if set, connects to peers' key API instead of a TCP
	// dial. Neither is read from the environment: tests route the peer
	// addresses of EndpointSlices, which may not be loopback addresses,
	// to loopback listeners.
	KeyAPIInterval time.Duration
	KeyAPIDial     func(ctx context.Context, addr string) (net.Conn, error)
	// ReplicaName names this Coordinator in status; empty means the host
	// name.
	ReplicaName string
	// ImportSealDir, with StoreK8sSecret, is the seal folder of a single
	// Coordinator's file store: at start, when the shared state does not
	// exist yet, that state is imported into it with the same data key,
	// seal mode and recovery data; the folder is only read.
	ImportSealDir string
	// StartupManifest, if set, is a manifest file applied at boot.
	StartupManifest string
	// Simulation admits marbles without attestation (insecure).
	Simulation bool
	// DebugLogging enables debug logs.
	DebugLogging bool
	// HTTPErrorLogLevel is the level of the HTTP server's own error log.
	HTTPErrorLogLevel string
	// Sealer seals the data key in SealDir; nil means
	// seal.SimulationSealer in simulation and the detected TEE's sealer
	// otherwise. It is not read from the environment: tests substitute
	// sealers to imitate a restart on another machine.
	Sealer seal.Sealer
	// AttestationDir is Gramine's attestation folder, where the TEE is
	// detected outside simulation; empty means issuer.GramineDir.
	AttestationDir string
	// SealMode is the seal mode (the Gramine sealing key) before a
	// manifest is set and when the manifest leaves Config.SealMode empty;
	// empty means SealModeProductKey. A manifest's Config.SealMode rules
	// otherwise, and may also be Disabled.
	SealMode SealMode
	// QCNLConf is the quote provider configuration naming the PCCS that
	// serves collateral for marble quotes; empty means
	// sgx.DefaultQCNLConfPath. A missing file selects Intel's PCS.
	QCNLConf string
	// Issuer, if set, produces the Coordinator's evidence outside
	// simulation instead of the detected TEE's issuer. Verifier, if set,
	// checks marble evidence instead of the DCAP verifier built from
	// QCNLConf. Neither is read from the environment, and both must be
	// nil in simulation; an insecure issuer or sealer is refused outside
	// simulation. When Issuer and Sealer are both set, no TEE is detected
	// and TEE names the platform in status, logs and metrics.
	Issuer   attestation.Issuer
	Verifier attestation.Verifier
	TEE      string
	// RecoveryKeyBits is the size of the ephemeral recovery key; 0 means
	// core.DefaultRecoveryKeyBits. It is not read from the environment:
	// only tests choose smaller keys.
	RecoveryKeyBits int
	// HandshakeTimeout bounds how long a connection to either API may take
	// to finish its TLS handshake (and, on the mesh API, the HTTP/2
	// preface) and, on the client API, to send its request headers; 0 means
	// DefaultHandshakeTimeout. It is not read from the environment.
	HandshakeTimeout time.Duration
	// IdleTimeout closes connections to either API that carry no request
	// for that long; 0 means DefaultIdleTimeout. It is not read from the
	// environment.
	IdleTimeout time.Duration
}

// Connection limits of both APIs. Marbles open one connection per
// activation and clients one per command, so neither waits long.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = time.Minute
)

func (c Config) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

// Describe lists the environment variables for --help.
func Describe() string {
	return strings.Join([]string{
		EnvMeshAddr + "         mesh API (gRPC) listen address (default \":2001\")",
		EnvClientAddr + "       client API (HTTPS) listen address (default \":4433\")",
		EnvPrometheusAddr + "   serve /metrics and /events over HTTP here (default: off)",
		EnvDNSNames + "         comma-separated names and IPs of the Coordinator (default \"localhost\")",
		EnvSealDir + "          folder of the sealed state (default \"$PWD/marblerun-coordinator-data\"; $" + EnvCWD + " replaces $PWD)",
		EnvStartupManifest + "              manifest file to set at start-up (default: none)",
		EnvDebugLogging + "                 \"1\" enables debug logging",
		EnvHTTPErrorLogLevel + "          level of HTTP server errors: debug, info, warn or error (default \"error\");",
		"                                  a client's failed TLS handshake is logged at info at most (debug if it hung up)",
		EnvSimulation + "                     \"1\" runs in simulation mode: no attestation, INSECURE",
		EnvPodName + "                          names this Coordinator in status (default: the host name)",
		"",
		"By default the sealed state is kept in " + EnvSealDir + ". In distributed mode it lives in the Kubernetes API:",
		EnvDistributed + "       \"1\" keeps the sealed state in Secrets of one namespace instead of a folder (one replica",
		"                                  for now); " + EnvSealDir + " must then be unset",
		EnvStoreBackend + "                 store of the distributed mode: only \"" + StoreK8sSecret + "\" (the default); refused",
		"                                  without " + EnvDistributed + "=1",
		EnvK8sStateName + "                name of the head Secret; further Secrets are named after it and labelled",
		"                                  " + store.LabelState + "=<name> (default \"" + store.DefaultKubeStateName + "\")",
		EnvK8sNamespace + "                 namespace of the Secrets (default: the Pod's, from " + serviceAccountNamespaceFile + ")",
		EnvK8sKEKMap + "                   ConfigMap in that namespace holding the state's key-encryption key sealed for",
		"                                  each platform (default \"" + store.DefaultKEKMapName + "\")",
		EnvImportSealDir + "   seal folder of a single Coordinator (read only): when the shared state does not exist",
		"                                  yet, its state is imported with the same data key, seal mode and recovery data, so the",
		"                                  owners' recovery keys stay valid; a restart with it left set carries on if the shared",
		"                                  state has that data key and refuses to start if it has another (default: none)",
		EnvKubeconfig + "                        kubeconfig file to reach the Kubernetes API (default: the in-cluster service account);",
		"                                  read in distributed mode only",
		EnvKeyAPIAddr + "      key API listen address, where replicas hand the key to attested peers (default \"" + DefaultKeyAPIAddr + "\");",
		"                                  refused without " + EnvDistributed + "=1",
		EnvK8sServiceName + "              Service whose EndpointSlices list the replicas' key API, port \"" + keyapi.PortName + "\" (default",
		"                                  \"" + keyapi.DefaultServiceName + "\"); refused without " + EnvDistributed + "=1",
		EnvPodIP + ", " + EnvPodName + "                  the Pod's IP and name (downward API), to leave this replica out of its peers;",
		"                                  read in distributed mode only",
		"",
		"Outside simulation the Coordinator runs under Gramine (gramine-sgx with sgx.remote_attestation = \"dcap\"),",
		"detected by <attestation folder>/quote and <attestation folder>/keys/:",
		EnvAttestationDir + "   Gramine's attestation folder (default \"" + issuer.GramineDir + "\")",
		EnvSealMode + "         sealing key: ProductKey (keys/_sgx_mrsigner, survives enclave updates by the same signer;",
		"                                  default) or UniqueKey (keys/_sgx_mrenclave, this enclave build only), used before a",
		"                                  manifest is set and when its Config.SealMode is empty; a manifest's Config.SealMode",
		"                                  (ProductKey, UniqueKey, or Disabled: nothing sealed, every restart needs the recovery",
		"                                  keys) rules otherwise. The data key is sealed in sealed_key beside sealed_data;",
		"                                  removing sealed_key makes the next start enter recovery (to rehearse one);",
		"                                  the 16-byte key becomes an AES-256-GCM key with HKDF-SHA256 (info \"" + sealKeyInfo + "\")",
		EnvQCNLConf + "         quote provider configuration: its pccs_url and use_secure_cert choose where collateral",
		"                                  for marble quotes comes from (default \"" + sgx.DefaultQCNLConfPath + "\"; missing: Intel PCS)",
		"",
		"GOGC                              garbage collector target (default 400 for the Coordinator; GOMEMLIMIT is honoured)",
	}, "\n")
}

// ConfigFromEnv reads the configuration from the environment. cwd is the
// working directory, used for the default seal folder.
func ConfigFromEnv(getenv func(string) string, cwd string) (Config, error) {
	return configFromEnv(getenv, cwd, os.ReadFile)
}

// configFromEnv is ConfigFromEnv reading files with readFile.
func configFromEnv(getenv func(string) string, cwd string, readFile func(string) ([]byte, error)) (Config, error) {
	cfg := Config{
		MeshAddr:          orDefault(getenv(EnvMeshAddr), ":2001"),
		ClientAddr:        orDefault(getenv(EnvClientAddr), ":4433"),
		PrometheusAddr:    getenv(EnvPrometheusAddr),
		StartupManifest:   getenv(EnvStartupManifest),
		ReplicaName:       strings.TrimSpace(getenv(EnvPodName)),
		HTTPErrorLogLevel: orDefault(getenv(EnvHTTPErrorLogLevel), "error"),
	}
	for _, n := range strings.Split(orDefault(getenv(EnvDNSNames), "localhost"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.DNSNames = append(cfg.DNSNames, n)
		}
	}
	if len(cfg.DNSNames) == 0 {
		return Config{}, fmt.Errorf("%s names no host", EnvDNSNames)
	}
	if dir := getenv(EnvCWD); dir != "" {
		cwd = dir
	}
	var err error
	if err := storeFromEnv(&cfg, getenv, cwd, readFile); err != nil {
		return Config{}, err
	}
	if cfg.Simulation, err = parseFlag(EnvSimulation, getenv(EnvSimulation)); err != nil {
		return Config{}, err
	}
	if cfg.DebugLogging, err = parseFlag(EnvDebugLogging, getenv(EnvDebugLogging)); err != nil {
		return Config{}, err
	}
	if cfg.SealMode, err = ParseSealMode(getenv(EnvSealMode)); err != nil {
		return Config{}, err
	}
	cfg.AttestationDir = orDefault(getenv(EnvAttestationDir), issuer.GramineDir)
	cfg.QCNLConf = orDefault(getenv(EnvQCNLConf), sgx.DefaultQCNLConfPath)
	switch strings.ToLower(cfg.HTTPErrorLogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return Config{}, fmt.Errorf("%s=%q: want debug, info, warn or error", EnvHTTPErrorLogLevel, cfg.HTTPErrorLogLevel)
	}
	return cfg, nil
}

// storeFromEnv chooses the store backend. Every setting of the other
// backend is refused rather than ignored.
func storeFromEnv(cfg *Config, getenv func(string) string, cwd string, readFile func(string) ([]byte, error)) error {
	distributed, err := parseFlag(EnvDistributed, getenv(EnvDistributed))
	if err != nil {
		return err
	}
	backend := strings.TrimSpace(getenv(EnvStoreBackend))
	if !distributed {
		if backend != "" {
			return fmt.Errorf("%s=%q needs %s=1 (without it the state is kept in %s)", EnvStoreBackend, backend, EnvDistributed, EnvSealDir)
		}
		for _, name := range []string{EnvK8sStateName, EnvK8sNamespace, EnvK8sKEKMap, EnvKeyAPIAddr, EnvK8sServiceName} {
			if getenv(name) != "" {
				return fmt.Errorf("%s is set, but only the distributed mode (%s=1) keeps the state in Secrets", name, EnvDistributed)
			}
		}
		if getenv(EnvImportSealDir) != "" {
			return fmt.Errorf("%s is set, but only a Coordinator in distributed mode (%s=1) imports a single Coordinator's state; unset it", EnvImportSealDir, EnvDistributed)
		}
		cfg.Store = StoreFile
		cfg.SealDir = orDefault(getenv(EnvSealDir), filepath.Join(cwd, "marblerun-coordinator-data"))
		return nil
	}
	switch backend {
	case "", StoreK8sSecret:
	default:
		return fmt.Errorf("%s=%q: the distributed mode supports only %q", EnvStoreBackend, backend, StoreK8sSecret)
	}
	if getenv(EnvSealDir) != "" {
		return fmt.Errorf("%s is set, but with %s=1 the state is kept in Secrets, not in a folder; unset it", EnvSealDir, EnvDistributed)
	}
	cfg.Store = StoreK8sSecret
	cfg.KubeStateName = orDefault(getenv(EnvK8sStateName), store.DefaultKubeStateName)
	if err := store.CheckKubeStateName(cfg.KubeStateName); err != nil {
		return fmt.Errorf("%s: %w", EnvK8sStateName, err)
	}
	cfg.KubeKEKMapName = orDefault(getenv(EnvK8sKEKMap), store.DefaultKEKMapName)
	if err := store.CheckKEKMapName(cfg.KubeKEKMapName); err != nil {
		return fmt.Errorf("%s: %w", EnvK8sKEKMap, err)
	}
	cfg.KubeNamespace = strings.TrimSpace(getenv(EnvK8sNamespace))
	if cfg.KubeNamespace == "" {
		raw, err := readFile(serviceAccountNamespaceFile)
		if err != nil {
			return fmt.Errorf("%s is not set and the Pod's namespace cannot be read (%w): set it to the namespace of the state's Secrets", EnvK8sNamespace, err)
		}
		cfg.KubeNamespace = strings.TrimSpace(string(raw))
	}
	if errs := validation.IsDNS1123Label(cfg.KubeNamespace); len(errs) > 0 {
		return fmt.Errorf("%s=%q is not a namespace name: %s", EnvK8sNamespace, cfg.KubeNamespace, strings.Join(errs, "; "))
	}
	cfg.Kubeconfig = getenv(EnvKubeconfig)
	cfg.KeyAPIAddr = orDefault(strings.TrimSpace(getenv(EnvKeyAPIAddr)), DefaultKeyAPIAddr)
	if _, _, err := net.SplitHostPort(cfg.KeyAPIAddr); err != nil {
		return fmt.Errorf("%s=%q is not a host:port address: %w", EnvKeyAPIAddr, cfg.KeyAPIAddr, err)
	}
	cfg.KeyAPIService = orDefault(strings.TrimSpace(getenv(EnvK8sServiceName)), keyapi.DefaultServiceName)
	if errs := validation.IsDNS1035Label(cfg.KeyAPIService); len(errs) > 0 {
		return fmt.Errorf("%s=%q is not a Service name: %s", EnvK8sServiceName, cfg.KeyAPIService, strings.Join(errs, "; "))
	}
	cfg.PodIP = strings.TrimSpace(getenv(EnvPodIP))
	if cfg.PodIP != "" && net.ParseIP(cfg.PodIP) == nil {
		return fmt.Errorf("%s=%q is not an IP address", EnvPodIP, cfg.PodIP)
	}
	cfg.ImportSealDir = strings.TrimSpace(getenv(EnvImportSealDir))
	return nil
}

func parseFlag(name, v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: want 1 or 0", name, v)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
