package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// chartDir is the chart folder a Helm user installs from.
var chartDir = filepath.Join("..", "..", "charts", "marblerun")

// helmOnlyDomain is the --domain of the CLI and coordinator.hostname of Helm.
const helmOnlyDomain = "coordinator.example.com"

// Helm arguments of README.md's "On Kubernetes" section.
var (
	helmSimulation = []string{"--set", "coordinator.simulation=true,coordinator.resources=null,tolerations=null,dcap=null"}
	helmHostname   = []string{"--set", "coordinator.hostname=" + helmOnlyDomain}
	// helmInjector is followed by the CA bundle flag, see kubectlSecret.
	helmInjector    = []string{"--set", "marbleInjector.start=true"}
	helmCertManager = []string{"--create-namespace", "--set", "marbleInjector.start=true", "--set", "marbleInjector.useCertManager=true"}
	// helmReplicas is marblerun install --distributed-deployment --replicas 3.
	helmReplicas = []string{"--set", "coordinator.distributedDeployment=true,coordinator.replicas=3"}
	// helmAzure gives Azure's SGX resource key as marblerun install does
	// when it finds Azure's device plugin on the nodes.
	helmAzure = []string{
		"--set", "marbleInjector.resourceKey=" + sgxresource.AzureEPC,
		"--set-json", `coordinator.resources.limits={"sgx.intel.com/epc":null,"sgx.intel.com/enclave":null,"sgx.intel.com/provision":null,"kubernetes.azure.com/sgx_epc_mem_in_MiB":"10"}`,
		"--set-json", `tolerations=[{"key":"sgx.intel.com/epc","operator":"Exists","effect":"NoSchedule"},{"key":"kubernetes.azure.com/sgx_epc_mem_in_MiB","operator":"Exists","effect":"NoSchedule"}]`,
	}
)

// intendedDiff is a difference between the Helm-only and the CLI
// installation that is there on purpose.
type intendedDiff struct {
	// object is "Kind name" with the namespace as <ns>.
	object string
	// path is the differing field (a prefix of it), or onlyHelm or onlyCLI
	// when the object exists in one installation only.
	path   string
	reason string
}

var (
	// diffCASecret: the CLI's own CA, which a Helm user keeps elsewhere.
	diffCASecret = intendedDiff{"Secret " + WebhookCASecret, onlyCLI,
		"the CLI keeps the CA that signed the webhook's certificate in the cluster, to sign the next one on reinstall; a Helm user makes the certificate outside the cluster"}
	// diffCertsLabels: kubectl create secret tls adds no labels.
	diffCertsLabels = []intendedDiff{
		{"Secret " + WebhookCertsSecret, `metadata.labels["app.kubernetes.io/managed-by"]`,
			"the CLI marks the webhook Secrets it creates outside the Helm release; `kubectl create secret tls` adds no labels"},
		{"Secret " + WebhookCertsSecret, `metadata.labels["app.kubernetes.io/part-of"]`,
			"the CLI marks the webhook Secrets it creates outside the Helm release; `kubectl create secret tls` adds no labels"},
	}
	// diffRelease: the release record holds the values as they were given.
	diffRelease = intendedDiff{"Secret sh.helm.release.v1.marblerun.v1", "data.release",
		"Helm's release record stores the values as given (the CLI's computed values, the user's --set flags) and timestamps; the objects rendered from them are compared"}
	// diffNamespaceLabel: helm --create-namespace labels what it creates.
	diffNamespaceLabel = intendedDiff{"Namespace <ns>", "metadata.labels.name",
		"helm install --create-namespace labels the namespace it creates with name=<ns>; marblerun install creates it without"}
)

// helmOnlyCase is a marblerun install and the Helm-only commands that must
// create the same objects.
type helmOnlyCase struct {
	name string
	// cli are the CLI's options (with baseOptions' defaults).
	cli func(*Options)
	// kubectlSecret creates the namespace and the webhook Secret before
	// helm install, as README.md says for the injector without cert-manager.
	kubectlSecret bool
	// helm are the arguments of helm install besides the release, chart and
	// namespace; a CA bundle argument is added with kubectlSecret.
	helm []string
	// node, when set, is the capacity of a Node added for the case.
	node map[string]string
	// injector tells whether both installations have the marble-injector.
	injector bool
	// certManager adds cert-manager's CRDs before both installations.
	certManager bool
	intended    []intendedDiff
}

func concat(args ...[]string) []string { return slices.Concat(args...) }

// TestHelmOnlyInstall installs the chart folder with the Helm SDK the way
// `helm install` does, with the values README.md gives Helm users, and with
// marblerun install into another namespace, and compares all objects of
// both installations. The cases run in order: the last one adds
// cert-manager's CRDs.
func TestHelmOnlyInstall(t *testing.T) {
	env := kubetest.Start(t)
	start := time.Now()
	cases := []helmOnlyCase{{
		name: "sgx defaults without injector",
		node: map[string]string{sgxresource.IntelEPC: "64Mi", sgxresource.IntelEnclave: "20", sgxresource.IntelProvision: "20"},
		cli:  func(o *Options) { o.DisableAutoInjection = true },
		// A plain helm install: the chart's defaults are the CLI's.
		helm:     []string{"--create-namespace"},
		intended: []intendedDiff{diffRelease, diffNamespaceLabel},
	}, {
		name: "simulation without injector",
		cli: func(o *Options) {
			o.Simulation = true
			o.Domains = []string{helmOnlyDomain}
			o.DisableAutoInjection = true
		},
		helm:     concat([]string{"--create-namespace"}, helmSimulation, helmHostname),
		intended: []intendedDiff{diffRelease, diffNamespaceLabel},
	}, {
		name: "simulation with injector and CA bundle",
		cli: func(o *Options) {
			o.Simulation = true
			o.Domains = []string{helmOnlyDomain}
		},
		kubectlSecret: true,
		injector:      true,
		helm:          concat(helmSimulation, helmHostname, helmInjector),
		intended:      append([]intendedDiff{diffRelease, diffCASecret}, diffCertsLabels...),
	}, {
		name: "sgx on Intel's device plugin with DCAP flags",
		node: map[string]string{sgxresource.IntelEPC: "64Mi", sgxresource.IntelEnclave: "20", sgxresource.IntelProvision: "20"},
		cli: func(o *Options) {
			o.Domains = []string{helmOnlyDomain}
			o.DCAPQPL = "intel"
			o.DCAPPCCSURL = "https://pccs.example.com:8081/sgx/certification/v4/"
			o.DCAPSecureCert = "FALSE"
		},
		kubectlSecret: true,
		injector:      true,
		helm: concat(helmHostname, []string{
			"--set", "dcap.qpl=intel,dcap.pccsUrl=https://pccs.example.com:8081/sgx/certification/v4/,dcap.useSecureCert=FALSE",
		}, helmInjector),
		intended: append([]intendedDiff{diffRelease, diffCASecret}, diffCertsLabels...),
	}, {
		name: "sgx on Azure's device plugin",
		node: map[string]string{sgxresource.AzureEPC: "128"},
		cli: func(o *Options) {
			o.Domains = []string{helmOnlyDomain}
		},
		kubectlSecret: true,
		injector:      true,
		helm:          concat(helmHostname, helmAzure, helmInjector),
		intended:      append([]intendedDiff{diffRelease, diffCASecret}, diffCertsLabels...),
	}, {
		name: "three distributed replicas in simulation without injector",
		cli: func(o *Options) {
			o.Simulation = true
			o.DisableAutoInjection = true
			o.DistributedDeployment = true
			o.Replicas = 3
		},
		helm:     concat([]string{"--create-namespace"}, helmSimulation, helmReplicas),
		intended: []intendedDiff{diffRelease, diffNamespaceLabel},
	}, {
		name: "simulation with cert-manager",
		cli: func(o *Options) {
			o.Simulation = true
			o.Domains = []string{helmOnlyDomain}
		},
		injector:    true,
		certManager: true,
		helm:        concat(helmSimulation, helmHostname, helmCertManager),
		intended:    []intendedDiff{diffRelease, diffNamespaceLabel},
	}}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.certManager {
				installCertManagerCRDs(t, env)
			}
			if tc.node != nil {
				addNode(t, env.Clientset, "sgx-node", tc.node)
			}
			helmNS, cliNS := fmt.Sprintf("helm-only-%d", i), fmt.Sprintf("marblerun-cli-%d", i)

			o := baseOptions()
			tc.cli(&o)
			if err := Install(t.Context(), NewCluster(env.Kubeconfig, cliNS), o); err != nil {
				t.Fatalf("marblerun install: %v", err)
			}
			args := tc.helm
			if tc.kubectlSecret {
				caPEM := kubectlWebhookSecret(t, env, helmNS)
				args = concat(args, []string{"--set", "marbleInjector.CABundle=" + base64.StdEncoding.EncodeToString(caPEM)})
			}
			helmInstall(t, env, helmNS, args)

			verifyWebhookCert(t, env, helmNS)
			verifyWebhookCert(t, env, cliNS)
			helmObjs := installedObjects(t, env, helmNS)
			cliObjs := installedObjects(t, env, cliNS)
			want := []string{"Deployment " + CoordinatorDeployment, "Service coordinator-mesh-api", "Secret sh.helm.release.v1.marblerun.v1"}
			if tc.injector {
				want = append(want, "Deployment "+InjectorDeployment, "MutatingWebhookConfiguration marble-injector-<ns>")
			}
			for _, k := range want {
				if helmObjs[k] == nil || cliObjs[k] == nil {
					t.Errorf("%s is missing: in the Helm-only installation %v, in the CLI's %v", k, helmObjs[k] != nil, cliObjs[k] != nil)
				}
			}
			if _, ok := helmObjs["Deployment "+InjectorDeployment]; ok != tc.injector {
				t.Errorf("marble-injector deployed: %v, want %v", ok, tc.injector)
			}
			compareInstallations(t, helmObjs, cliObjs, tc.intended)
		})
	}
	t.Logf("installing %d cases twice and comparing took %s", len(cases), time.Since(start).Round(time.Millisecond))
}

// helmInstall runs what `helm install marblerun charts/marblerun -n ns
// <args>` runs: the values from --set and --set-json flags, the chart
// folder loaded from disk, action.Install with helm's own client settings.
func helmInstall(t *testing.T, env *kubetest.Env, ns string, args []string) {
	t.Helper()
	settings := cli.New()
	settings.KubeConfig = env.Kubeconfig
	settings.SetNamespace(ns)
	cfg := new(action.Configuration)
	if err := cfg.Init(settings.RESTClientGetter(), settings.Namespace(), os.Getenv("HELM_DRIVER"), func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName = ReleaseName
	inst.Namespace = settings.Namespace()
	inst.Timeout = 5 * time.Minute
	var vo values.Options
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--create-namespace":
			inst.CreateNamespace = true
		case (a == "--set" || a == "--set-json") && i+1 < len(args):
			i++
			if a == "--set" {
				vo.Values = append(vo.Values, args[i])
			} else {
				vo.JSONValues = append(vo.JSONValues, args[i])
			}
		default:
			t.Fatalf("helm install: the test does not know the argument %q", a)
		}
	}
	vals, err := vo.MergeValues(getter.All(settings))
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.RunWithContext(t.Context(), ch, vals); err != nil {
		t.Fatalf("helm install %s: %v", strings.Join(args, " "), err)
	}
}

// kubectlWebhookSecret makes what README.md asks of a Helm user who wants
// the injector without cert-manager: a CA and a serving certificate for
// marble-injector.<ns>.svc (as openssl would, PKCS#8 key), the namespace
// (kubectl create namespace) and the Secret (kubectl create secret tls).
// It returns the CA's PEM.
func kubectlWebhookSecret(t *testing.T, env *kubetest.Env, ns string) []byte {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "my webhook CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey := newKey()
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "marble-injector." + ns + ".svc"},
		DNSNames:  []string{"marble-injector." + ns + ".svc"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	cs := env.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookCertsSecret, Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// verifyWebhookCert checks, when the webhook configuration of ns has a
// caBundle, that it verifies the serving certificate in the Secret
// marble-injector-webhook-certs for the Service's name: the bytes the
// comparison leaves out must work in both installations.
func verifyWebhookCert(t *testing.T, env *kubetest.Env, ns string) {
	t.Helper()
	cs := env.Clientset
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), "marble-injector-"+ns, metav1.GetOptions{})
	if err != nil || len(mwc.Webhooks) == 0 || len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		return // no injector, or cert-manager's
	}
	secret, err := cs.CoreV1().Secrets(ns).Get(t.Context(), WebhookCertsSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: the webhook has a caBundle but no certificate: %v", ns, err)
	}
	block, _ := pem.Decode(secret.Data[corev1.TLSCertKey])
	if block == nil {
		t.Fatalf("%s: no certificate in Secret %s", ns, WebhookCertsSecret)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatalf("%s: the caBundle holds no PEM certificate", ns)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "marble-injector." + ns + ".svc", Roots: pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("%s: the webhook's certificate does not verify with the caBundle: %v", ns, err)
	}
}

// installedObjects returns every object of ns, of every listable
// resource the API server serves but Events, and the cluster-scoped objects whose
// name contains ns or that Helm assigns to a release in ns, normalised
// (see normalise) and keyed by "Kind name" with ns replaced by <ns>.
func installedObjects(t *testing.T, env *kubetest.Env, ns string) map[string]map[string]any {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = rest.NoWarnings{} // deprecated kinds are listed too
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := discovery.ServerPreferredResources(dc)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.APIResources {
			// Events are not installed but written by the control plane
			// when it gets to it (now and then one about the Service
			// coordinator-mesh-api), so they differ by timing alone.
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			res := dyn.Resource(gv.WithResource(r.Name))
			var ri dynamic.ResourceInterface = res
			if r.Namespaced {
				ri = res.Namespace(ns)
			}
			items, err := ri.List(t.Context(), metav1.ListOptions{})
			if err != nil {
				t.Fatalf("listing %s: %v", r.Name, err)
			}
			for _, it := range items.Items {
				if !r.Namespaced && !strings.Contains(it.GetName(), ns) && it.GetAnnotations()["meta.helm.sh/release-namespace"] != ns {
					continue
				}
				key := r.Kind + " " + strings.ReplaceAll(it.GetName(), ns, "<ns>")
				if _, dup := out[key]; dup {
					t.Fatalf("two objects %s", key)
				}
				out[key] = normalise(t, ns, it.Object)
			}
		}
	}
	return out
}

// normalise removes from obj what differs between any two installations
// (the fields the API server assigns and the generated certificate bytes,
// checked by verifyWebhookCert) and replaces ns by <ns> everywhere.
func normalise(t *testing.T, ns string, obj map[string]any) map[string]any {
	t.Helper()
	meta, _ := obj["metadata"].(map[string]any)
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields"} {
		delete(meta, f)
	}
	kind, _ := obj["kind"].(string)
	name, _ := meta["name"].(string)
	switch {
	case kind == "Service":
		// Allocated from the Service CIDR.
		spec, _ := obj["spec"].(map[string]any)
		if _, ok := spec["clusterIP"]; ok {
			spec["clusterIP"] = "<allocated>"
			spec["clusterIPs"] = []any{"<allocated>"}
		}
	case kind == "Secret" && name == WebhookCertsSecret:
		data, _ := obj["data"].(map[string]any)
		for k, pemType := range map[string]*regexp.Regexp{
			corev1.TLSCertKey:       regexp.MustCompile(`^CERTIFICATE$`),
			corev1.TLSPrivateKeyKey: regexp.MustCompile(`^(EC |RSA )?PRIVATE KEY$`),
		} {
			s, _ := data[k].(string)
			b, err := base64.StdEncoding.DecodeString(s)
			block, _ := pem.Decode(b)
			if err != nil || block == nil || !pemType.MatchString(block.Type) {
				t.Errorf("%s: Secret %s: %s is no %s PEM block", ns, name, k, pemType)
				continue
			}
			data[k] = "<generated " + k + ">"
		}
	case kind == "MutatingWebhookConfiguration":
		hooks, _ := obj["webhooks"].([]any)
		for _, h := range hooks {
			cc, _ := h.(map[string]any)["clientConfig"].(map[string]any)
			if _, ok := cc["caBundle"]; ok {
				cc["caBundle"] = "<generated CA bundle>"
			}
		}
	case kind == "Secret" && strings.HasPrefix(name, "sh.helm.release.v1."):
		labels, _ := meta["labels"].(map[string]any)
		for _, l := range []string{"createdAt", "modifiedAt"} {
			if _, ok := labels[l]; ok {
				labels[l] = "<timestamp>"
			}
		}
	}
	return replaceNS(obj, ns).(map[string]any)
}

func replaceNS(v any, ns string) any {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, ns, "<ns>")
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[strings.ReplaceAll(k, ns, "<ns>")] = replaceNS(e, ns)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = replaceNS(e, ns)
		}
		return out
	}
	return v
}

// flatten turns v into path → JSON value lines in leaves. The elements of
// lists of named objects (containers, env, ports, volumes, webhooks) are
// addressed by name, so that one missing element is one difference; elems
// gets each such element's path and JSON.
func flatten(prefix string, v any, leaves, elems map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			leaves[prefix] = "{}"
		}
		for k, e := range v {
			p := prefix + "." + k
			if !simpleKey.MatchString(k) {
				p = prefix + "[" + jsonOf(k) + "]"
			}
			flatten(strings.TrimPrefix(p, "."), e, leaves, elems)
		}
	case []any:
		if len(v) == 0 {
			leaves[prefix] = "[]"
		}
		named := true
		seen := map[string]bool{}
		for _, e := range v {
			m, ok := e.(map[string]any)
			n, isString := m["name"].(string)
			if !ok || !isString || seen[n] {
				named = false
				break
			}
			seen[n] = true
		}
		for i, e := range v {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if named {
				p = prefix + "[name=" + e.(map[string]any)["name"].(string) + "]"
				elems[p] = jsonOf(e)
			}
			flatten(p, e, leaves, elems)
		}
	default:
		leaves[prefix] = jsonOf(v)
	}
}

var simpleKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// installDiff is one difference: the object ("Kind name"), the field
// (onlyHelm or onlyCLI when the object exists on one side only) and a
// readable text.
type installDiff struct{ object, path, text string }

const (
	onlyHelm = "(only in the Helm-only installation)"
	onlyCLI  = "(only in the CLI installation)"
)

// diffInstallations lists every difference between the objects of the
// Helm-only and of the CLI installation, sorted.
func diffInstallations(helmObjs, cliObjs map[string]map[string]any) []installDiff {
	var keys []string
	for k := range helmObjs {
		keys = append(keys, k)
	}
	for k := range cliObjs {
		if _, ok := helmObjs[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []installDiff
	for _, k := range keys {
		h, inHelm := helmObjs[k]
		c, inCLI := cliObjs[k]
		switch {
		case !inCLI:
			out = append(out, installDiff{k, onlyHelm, k + ": only in the Helm-only installation"})
			continue
		case !inHelm:
			out = append(out, installDiff{k, onlyCLI, k + ": only in the CLI installation"})
			continue
		}
		hf, cf := map[string]string{}, map[string]string{}
		he, ce := map[string]string{}, map[string]string{}
		flatten("", h, hf, he)
		flatten("", c, cf, ce)
		// A list element on one side only is one difference.
		var missing []string
		for p, e := range he {
			if _, ok := ce[p]; !ok {
				missing = append(missing, p)
				hf[p], cf[p] = e, "(absent)"
			}
		}
		for p, e := range ce {
			if _, ok := he[p]; !ok {
				missing = append(missing, p)
				hf[p], cf[p] = "(absent)", e
			}
		}
		under := func(p string) bool {
			for _, m := range missing {
				if strings.HasPrefix(p, m) && p != m {
					return true
				}
			}
			return false
		}
		var paths []string
		for p := range hf {
			paths = append(paths, p)
		}
		for p := range cf {
			if _, ok := hf[p]; !ok {
				paths = append(paths, p)
			}
		}
		sort.Strings(paths)
		for _, p := range paths {
			hv, hok := hf[p]
			cv, cok := cf[p]
			if hok && cok && hv == cv || under(p) {
				continue
			}
			if !hok {
				hv = "(absent)"
			}
			if !cok {
				cv = "(absent)"
			}
			out = append(out, installDiff{k, p, fmt.Sprintf("%s: %s:\n      helm: %s\n      cli:  %s", k, p, hv, cv)})
		}
	}
	return out
}

// compareInstallations fails with every difference that is not intended,
// and with every intended difference that does not occur.
func compareInstallations(t *testing.T, helmObjs, cliObjs map[string]map[string]any, intended []intendedDiff) {
	t.Helper()
	used := make([]bool, len(intended))
	var unexpected []string
	for _, d := range diffInstallations(helmObjs, cliObjs) {
		ok := false
		for i, in := range intended {
			if in.object == d.object && in.path != "" && strings.HasPrefix(d.path, in.path) {
				used[i] = true
				ok = true
				t.Logf("intended difference: %s %s (%s)", d.object, d.path, in.reason)
			}
		}
		if !ok {
			unexpected = append(unexpected, "  "+d.text)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("the Helm-only installation differs from marblerun install's in %d places:\n%s", len(unexpected), strings.Join(unexpected, "\n"))
	}
	for i, in := range intended {
		if !used[i] {
			t.Errorf("the intended difference %s %s (%s) does not occur: remove it from the test", in.object, in.path, in.reason)
		}
	}
}

// TestHelmOnlyReadme checks that README.md gives Helm users the flags that
// TestHelmOnlyInstall installs with.
func TestHelmOnlyReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kubectl create namespace marblerun\n",
		"kubectl -n marblerun create secret tls " + WebhookCertsSecret + " --cert=tls.crt --key=tls.key\n",
		"helm install marblerun charts/marblerun -n marblerun \\\n",
		"--set marbleInjector.CABundle=$(base64 -w0 ca.crt)",
		"marblerun install --simulation --domain " + helmOnlyDomain + "\n",
	}
	for _, args := range [][]string{helmSimulation, helmHostname, helmInjector, helmCertManager, helmAzure, helmReplicas} {
		for i := 0; i < len(args); i++ {
			switch args[i] {
			case "--set":
				want = append(want, "--set "+args[i+1])
				i++
			case "--set-json":
				want = append(want, "--set-json '"+args[i+1]+"'")
				i++
			default:
				want = append(want, args[i])
			}
		}
	}
	for _, w := range want {
		if !strings.Contains(string(readme), w) {
			t.Errorf("README.md lacks %q", w)
		}
	}
}
