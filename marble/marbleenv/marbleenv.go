// Package marbleenv declares the environment variables of the marble
// protocol, once for every side: the ones a marble's premain reads to find
// the Coordinator (set by the marble-injector or by hand), and the ones the
// Coordinator hands an activated marble. It imports nothing, so the
// Coordinator, the injector and the marble package can all use it.
package marbleenv

// Read by a marble before activation (the marble-injector sets the first
// four in Pods labelled marblerun/marbletype).
const (
	// MarbleType names the marble in the manifest's Marbles section (required).
	MarbleType = "EDG_MARBLE_TYPE"
	// CoordinatorAddr is the Coordinator's mesh API address, host:port.
	CoordinatorAddr = "EDG_MARBLE_COORDINATOR_ADDR"
	// DNSNames is a comma-separated list of names for the marble's
	// certificate; IP literals become IP addresses.
	DNSNames = "EDG_MARBLE_DNS_NAMES"
	// UUIDFile is the file that holds the marble's UUID.
	UUIDFile = "EDG_MARBLE_UUID_FILE"
	// AttestationDir names Gramine's attestation folder, where an SGX marble
	// under gramine-sgx obtains its quote (default /dev/attestation).
	AttestationDir = "EDG_MARBLE_ATTESTATION_DIR"
	// Simulation set to "1" selects simulation: no attestation (insecure).
	Simulation = "OE_SIMULATION"
	// LogFormat set to "json" makes the marble's activation (premain,
	// marble.PreMain) log JSON lines, the Coordinator's format; else text.
	LogFormat = "EDG_LOG_FORMAT"
)

// Given by the Coordinator to every activated marble.
const (
	// RootCA holds the Marble root certificate (PEM): the trust anchor of
	// the mesh's mTLS.
	RootCA = "MARBLE_PREDEFINED_ROOT_CA"
	// CertificateChain holds the marble's certificate followed by the
	// intermediate (PEM).
	CertificateChain = "MARBLE_PREDEFINED_MARBLE_CERTIFICATE_CHAIN"
	// PrivateKey holds the marble's private key (PKCS#8 PEM).
	PrivateKey = "MARBLE_PREDEFINED_PRIVATE_KEY"
	// CoordinatorRootCA holds the Coordinator's root certificate (PEM).
	CoordinatorRootCA = "MARBLE_PREDEFINED_COORDINATOR_ROOT_CA"
	// TransparentTLS holds the marble's transparent-TLS rules (JSON, a
	// ttlsconfig.Document), given only to marbles whose manifest entry has
	// TLS tags.
	TransparentTLS = "MARBLE_TTLS_CONFIG"
)
