package coordinator

import (
	"bytes"
	"io/fs"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/test/issuertest"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{"defaults", nil, func(t *testing.T, c Config) {
			if c.MeshAddr != ":2001" || c.ClientAddr != ":4433" || c.PrometheusAddr != "" {
				t.Fatalf("addresses %q %q %q", c.MeshAddr, c.ClientAddr, c.PrometheusAddr)
			}
			if !slices.Equal(c.DNSNames, []string{"localhost"}) || c.SealDir != "/srv/app/marblerun-coordinator-data" {
				t.Fatalf("names %v seal %q", c.DNSNames, c.SealDir)
			}
			if c.Simulation || c.DebugLogging || c.HTTPErrorLogLevel != "error" {
				t.Fatalf("flags %+v", c)
			}
			if c.AttestationDir != "/dev/attestation" || c.SealMode != SealModeProductKey || c.QCNLConf != "/etc/sgx_default_qcnl.conf" {
				t.Fatalf("TEE settings %q %q %q", c.AttestationDir, c.SealMode, c.QCNLConf)
			}
		}, ""},
		{"TEE settings", map[string]string{EnvAttestationDir: "/mnt/attestation", EnvSealMode: "UNIQUEKEY", EnvQCNLConf: "/etc/qcnl.json"}, func(t *testing.T, c Config) {
			if c.AttestationDir != "/mnt/attestation" || c.SealMode != SealModeUniqueKey || c.QCNLConf != "/etc/qcnl.json" {
				t.Fatalf("TEE settings %q %q %q", c.AttestationDir, c.SealMode, c.QCNLConf)
			}
		}, ""},
		{"bad seal mode", map[string]string{EnvSealMode: "Disabled"}, nil, EnvSealMode + `="Disabled": want ProductKey or UniqueKey`},
		{"everything", map[string]string{
			EnvMeshAddr: "127.0.0.1:1", EnvClientAddr: "127.0.0.1:2", EnvPrometheusAddr: "127.0.0.1:3",
			EnvDNSNames: "a.example, 10.0.0.1,,b", EnvSealDir: "/seal", EnvStartupManifest: "/m.json",
			EnvDebugLogging: "1", EnvSimulation: "1", EnvHTTPErrorLogLevel: "warn",
		}, func(t *testing.T, c Config) {
			if c.MeshAddr != "127.0.0.1:1" || c.ClientAddr != "127.0.0.1:2" || c.PrometheusAddr != "127.0.0.1:3" {
				t.Fatalf("addresses %+v", c)
			}
			if !slices.Equal(c.DNSNames, []string{"a.example", "10.0.0.1", "b"}) || c.SealDir != "/seal" || c.StartupManifest != "/m.json" {
				t.Fatalf("%+v", c)
			}
			if !c.Simulation || !c.DebugLogging || c.HTTPErrorLogLevel != "warn" {
				t.Fatalf("flags %+v", c)
			}
		}, ""},
		{"EDG_CWD moves the seal folder", map[string]string{EnvCWD: "/enclave"}, func(t *testing.T, c Config) {
			if c.SealDir != "/enclave/marblerun-coordinator-data" {
				t.Fatalf("seal dir %q", c.SealDir)
			}
		}, ""},
		{"simulation 0", map[string]string{EnvSimulation: "0"}, func(t *testing.T, c Config) {
			if c.Simulation {
				t.Fatal("OE_SIMULATION=0 enabled simulation")
			}
		}, ""},
		{"bad simulation value", map[string]string{EnvSimulation: "maybe"}, nil, "OE_SIMULATION"},
		{"bad log level", map[string]string{EnvHTTPErrorLogLevel: "loud"}, nil, EnvHTTPErrorLogLevel},
		{"no names", map[string]string{EnvDNSNames: " , "}, nil, EnvDNSNames},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ConfigFromEnv(envFrom(tc.env), "/srv/app")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestMainRefusesWithoutSimulation(t *testing.T) {
	var out, errOut bytes.Buffer
	empty := t.TempDir()
	code := Main(t.Context(), nil, envFrom(map[string]string{
		EnvSealDir: t.TempDir(), EnvMeshAddr: "127.0.0.1:0", EnvClientAddr: "127.0.0.1:0", EnvAttestationDir: empty,
	}), &out, &errOut)
	if code != 1 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(errOut.String(), "OE_SIMULATION=1") || !strings.Contains(errOut.String(), "no trusted execution environment") ||
		!strings.Contains(errOut.String(), empty+"/quote") || !strings.Contains(errOut.String(), EnvAttestationDir) {
		t.Fatalf("stderr does not say why: %q", errOut.String())
	}
}

func TestMainRefusesGramineWithoutQuote(t *testing.T) {
	dir := issuertest.Gramine{Keys: true, SignerKey: signerKey, AttestationType: "none"}.Create(t)
	var out, errOut bytes.Buffer
	code := Main(t.Context(), nil, envFrom(map[string]string{
		EnvSealDir: t.TempDir(), EnvMeshAddr: "127.0.0.1:0", EnvClientAddr: "127.0.0.1:0", EnvAttestationDir: dir,
	}), &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), dir+"/quote does not") || !strings.Contains(out.String(), "the Coordinator cannot start") {
		t.Fatalf("exit code %d, stderr %q, log %q", code, errOut.String(), out.String())
	}
}

func TestMainRefusesBadSealMode(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), nil, envFrom(map[string]string{EnvSealMode: "Disabled"}), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), EnvSealMode) {
		t.Fatalf("exit code %d, stderr %q", code, errOut.String())
	}
}

func TestMainHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), []string{"--help"}, envFrom(nil), &out, &errOut); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, want := range []string{EnvMeshAddr, EnvClientAddr, EnvSealDir, EnvSimulation, "--simulation",
		EnvDistributed, EnvStoreBackend, EnvK8sStateName, EnvK8sNamespace, EnvK8sKEKMap, EnvImportSealDir, EnvKubeconfig, EnvKeyAPIAddr, EnvK8sServiceName, EnvPodIP, EnvPodName,
		"k8s-secret", "marblerun-state", "marblerun-sealed-kek", "marblemesh.io/state",
		EnvAttestationDir, EnvSealMode, EnvQCNLConf, "ProductKey", "UniqueKey", "_sgx_mrsigner", "_sgx_mrenclave", "HKDF-SHA256", "pccs_url", "use_secure_cert"} {
		if !strings.Contains(errOut.String(), strings.TrimPrefix(want, "-")) {
			t.Errorf("help lacks %s", want)
		}
	}
	if code := Main(t.Context(), []string{"--bogus"}, envFrom(nil), &out, &errOut); code != 2 {
		t.Fatalf("unknown flag exit code %d", code)
	}
}

func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	if got := tuneGC(envFrom(nil)); got != defaultGCPercent || debug.SetGCPercent(defaultGCPercent) != defaultGCPercent {
		t.Fatalf("without GOGC: %d", got)
	}
	debug.SetGCPercent(150)
	if got := tuneGC(envFrom(map[string]string{"GOGC": "150"})); got != 150 || debug.SetGCPercent(150) != 150 {
		t.Fatalf("with GOGC=150: %d", got)
	}
}

// TestConfigStore covers every combination of the store settings: the file
// store by default, the k8s-secret store in distributed mode, and each
// setting that does not fit the mode refused.
func TestConfigStore(t *testing.T) {
	const nsFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
	inPod := func(name string) ([]byte, error) {
		if name != nsFile {
			return nil, fs.ErrNotExist
		}
		return []byte("pod-ns\n"), nil
	}
	outside := func(string) ([]byte, error) { return nil, fs.ErrNotExist }
	file := Config{Store: StoreFile, SealDir: "/srv/app/marblerun-coordinator-data"}
	kube := func(ns, name, kubeconfig string) Config {
		return Config{Store: StoreK8sSecret, KubeNamespace: ns, KubeStateName: name, KubeKEKMapName: "marblerun-sealed-kek", Kubeconfig: kubeconfig,
			KeyAPIAddr: ":5433", KeyAPIService: "coordinator-key-api"}
	}
	withKeyAPI := func(c Config, addr, service, podIP, podName string) Config {
		c.KeyAPIAddr, c.KeyAPIService, c.PodIP, c.ReplicaName = addr, service, podIP, podName
		return c
	}
	tests := []struct {
		name     string
		env      map[string]string
		readFile func(string) ([]byte, error)
		want     Config
		wantErr  string
	}{
		{"file store by default", nil, inPod, file, ""},
		{"file store in a folder", map[string]string{EnvSealDir: "/seal"}, inPod, Config{Store: StoreFile, SealDir: "/seal"}, ""},
		{"distributed 0 is the file store", map[string]string{EnvDistributed: "0"}, inPod, file, ""},
		{"KUBECONFIG is not the file store's", map[string]string{EnvKubeconfig: "/kube/config"}, inPod, file, ""},
		{"distributed, defaults in a Pod", map[string]string{EnvDistributed: "1"}, inPod, kube("pod-ns", "marblerun-state", ""), ""},
		{"distributed, every setting", map[string]string{
			EnvDistributed: "true", EnvStoreBackend: "k8s-secret", EnvK8sStateName: "my-state", EnvK8sNamespace: "mr", EnvKubeconfig: "/kube/config",
		}, outside, kube("mr", "my-state", "/kube/config"), ""},
		{"distributed, key API settings", map[string]string{
			EnvDistributed: "1", EnvKeyAPIAddr: "127.0.0.1:6000", EnvK8sServiceName: "my-key-api", EnvPodIP: "10.1.2.3", EnvPodName: "coordinator-0",
		}, inPod, withKeyAPI(kube("pod-ns", "marblerun-state", ""), "127.0.0.1:6000", "my-key-api", "10.1.2.3", "coordinator-0"), ""},
		{"the Pod IP is not the file store's; the Pod name names it in status", map[string]string{EnvPodIP: "10.1.2.3", EnvPodName: "c-0"}, inPod, func() Config {
			c := file
			c.ReplicaName = "c-0"
			return c
		}(), ""},
		{"distributed, KEK map name", map[string]string{EnvDistributed: "1", EnvK8sKEKMap: "my.kek-map"}, inPod, func() Config {
			c := kube("pod-ns", "marblerun-state", "")
			c.KubeKEKMapName = "my.kek-map"
			return c
		}(), ""},
		{"distributed, importing a seal folder", map[string]string{EnvDistributed: "1", EnvImportSealDir: "/import/seal"}, inPod, func() Config {
			c := kube("pod-ns", "marblerun-state", "")
			c.ImportSealDir = "/import/seal"
			return c
		}(), ""},
		{"distributed, namespace set outside a Pod", map[string]string{EnvDistributed: "1", EnvK8sNamespace: "mr"}, outside, kube("mr", "marblerun-state", ""), ""},
		{"distributed, namespace set wins over the Pod's", map[string]string{EnvDistributed: "1", EnvK8sNamespace: "other"}, inPod, kube("other", "marblerun-state", ""), ""},

		{"backend without distributed mode", map[string]string{EnvStoreBackend: "k8s-secret"}, inPod, Config{}, EnvStoreBackend + `="k8s-secret" needs ` + EnvDistributed + "=1"},
		{"backend with distributed 0", map[string]string{EnvDistributed: "0", EnvStoreBackend: "k8s-secret"}, inPod, Config{}, "needs " + EnvDistributed + "=1"},
		{"state name without distributed mode", map[string]string{EnvK8sStateName: "s"}, inPod, Config{}, EnvK8sStateName + " is set, but only the distributed mode"},
		{"KEK map without distributed mode", map[string]string{EnvK8sKEKMap: "m"}, inPod, Config{}, EnvK8sKEKMap + " is set, but only the distributed mode"},
		{"bad KEK map name", map[string]string{EnvDistributed: "1", EnvK8sKEKMap: "Map_1"}, inPod, Config{}, EnvK8sKEKMap + `: key-encryption key map name "Map_1"`},
		{"import without distributed mode", map[string]string{EnvSealDir: "/seal", EnvImportSealDir: "/seal"}, inPod, Config{}, EnvImportSealDir + " is set, but only a Coordinator in distributed mode"},
		{"namespace without distributed mode", map[string]string{EnvK8sNamespace: "mr"}, inPod, Config{}, EnvK8sNamespace + " is set, but only the distributed mode"},
		{"key API address without distributed mode", map[string]string{EnvKeyAPIAddr: ":5433"}, inPod, Config{}, EnvKeyAPIAddr + " is set, but only the distributed mode"},
		{"key API Service without distributed mode", map[string]string{EnvK8sServiceName: "k"}, inPod, Config{}, EnvK8sServiceName + " is set, but only the distributed mode"},
		{"bad key API address", map[string]string{EnvDistributed: "1", EnvKeyAPIAddr: "5433"}, inPod, Config{}, EnvKeyAPIAddr + `="5433" is not a host:port address`},
		{"bad key API Service", map[string]string{EnvDistributed: "1", EnvK8sServiceName: "Key_API"}, inPod, Config{}, EnvK8sServiceName + `="Key_API" is not a Service name`},
		{"bad Pod IP", map[string]string{EnvDistributed: "1", EnvPodIP: "pod"}, inPod, Config{}, EnvPodIP + `="pod" is not an IP address`},
		{"unknown backend", map[string]string{EnvDistributed: "1", EnvStoreBackend: "etcd"}, inPod, Config{}, EnvStoreBackend + `="etcd": the distributed mode supports only "k8s-secret"`},
		{"file backend in distributed mode", map[string]string{EnvDistributed: "1", EnvStoreBackend: "file"}, inPod, Config{}, "supports only"},
		{"seal dir in distributed mode", map[string]string{EnvDistributed: "1", EnvSealDir: "/seal"}, inPod, Config{}, EnvSealDir + " is set, but with " + EnvDistributed + "=1"},
		{"bad distributed value", map[string]string{EnvDistributed: "maybe"}, inPod, Config{}, EnvDistributed + `="maybe"`},
		{"no namespace outside a Pod", map[string]string{EnvDistributed: "1"}, outside, Config{}, EnvK8sNamespace + " is not set and the Pod's namespace cannot be read"},
		{"bad namespace", map[string]string{EnvDistributed: "1", EnvK8sNamespace: "My_NS"}, inPod, Config{}, EnvK8sNamespace + `="My_NS" is not a namespace name`},
		{"bad state name", map[string]string{EnvDistributed: "1", EnvK8sStateName: "State!"}, inPod, Config{}, EnvK8sStateName + `: state name "State!"`},
		{"state name too long", map[string]string{EnvDistributed: "1", EnvK8sStateName: strings.Repeat("s", 44)}, inPod, Config{}, "at most 43 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := configFromEnv(envFrom(tc.env), "/srv/app", tc.readFile)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := Config{Store: c.Store, SealDir: c.SealDir, KubeNamespace: c.KubeNamespace, KubeStateName: c.KubeStateName, KubeKEKMapName: c.KubeKEKMapName, Kubeconfig: c.Kubeconfig,
				KeyAPIAddr: c.KeyAPIAddr, KeyAPIService: c.KeyAPIService, PodIP: c.PodIP, ReplicaName: c.ReplicaName, ImportSealDir: c.ImportSealDir}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("store settings %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMainRefusesStoreSettings: a refused store setting stops the
// Coordinator before it opens anything, with the configuration's exit code.
func TestMainRefusesStoreSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main(t.Context(), nil, envFrom(map[string]string{EnvSimulation: "1", EnvStoreBackend: "k8s-secret"}), &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), EnvStoreBackend) || !strings.Contains(errOut.String(), EnvDistributed) {
		t.Fatalf("exit code %d, stderr %q", code, errOut.String())
	}
}

// TestMainDistributedWithoutCluster: in distributed mode without a
// kubeconfig and outside a cluster, the Coordinator says it cannot reach
// the Kubernetes API and does not fall back to a folder.
func TestMainDistributedWithoutCluster(t *testing.T) {
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		t.Skip("running in a Kubernetes Pod: the in-cluster configuration exists")
	}
	var out, errOut bytes.Buffer
	code := Main(t.Context(), nil, envFrom(map[string]string{
		EnvSimulation: "1", EnvDistributed: "1", EnvK8sNamespace: "mr", EnvMeshAddr: "127.0.0.1:0", EnvClientAddr: "127.0.0.1:0",
	}), &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "in-cluster Kubernetes configuration") || !strings.Contains(errOut.String(), EnvKubeconfig) {
		t.Fatalf("exit code %d, stderr %q", code, errOut.String())
	}
}
