package install

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/marblemesh/marblemesh/charts"
	"github.com/marblemesh/marblemesh/test/kubetest"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// baseOptions are the defaults of marblerun install.
func baseOptions() Options {
	return Options{
		DCAPQPL: "azure", DCAPPCCSURL: DefaultPCCSURL, DCAPSecureCert: "TRUE",
		MeshServerPort: 2001, ClientServerPort: 4433,
	}
}

// objectsIn lists the objects of the kinds an installation may create in
// ns, and the webhook configurations, as sorted "Kind name" lines with ns
// replaced by <ns>. Objects whose deletion is under way count as gone.
func objectsIn(t *testing.T, env *kubetest.Env, ns string) string {
	t.Helper()
	ctx := t.Context()
	cs := env.Clientset
	var lines []string
	add := func(kind string, m metav1.Object) {
		if m.GetDeletionTimestamp() != nil {
			return
		}
		lines = append(lines, kind+" "+strings.ReplaceAll(m.GetName(), ns, "<ns>"))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ds, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range ds.Items {
		add("Deployment", &ds.Items[i])
	}
	svcs, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range svcs.Items {
		add("Service", &svcs.Items[i])
	}
	pvcs, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range pvcs.Items {
		add("PersistentVolumeClaim", &pvcs.Items[i])
	}
	cms, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range cms.Items {
		if cms.Items[i].Name != "kube-root-ca.crt" {
			add("ConfigMap", &cms.Items[i])
		}
	}
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range secrets.Items {
		add("Secret", &secrets.Items[i])
	}
	sas, err := cs.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range sas.Items {
		if sas.Items[i].Name != "default" {
			add("ServiceAccount", &sas.Items[i])
		}
	}
	roles, err := cs.RbacV1().Roles(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range roles.Items {
		add("Role", &roles.Items[i])
	}
	rbs, err := cs.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for i := range rbs.Items {
		add("RoleBinding", &rbs.Items[i])
	}
	mwcs, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	must(err)
	for i := range mwcs.Items {
		if strings.HasSuffix(mwcs.Items[i].Name, "-"+ns) {
			add("MutatingWebhookConfiguration", &mwcs.Items[i])
		}
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	must(err)
	for kind, gvr := range map[string]schema.GroupVersionResource{
		"Issuer":      {Group: "cert-manager.io", Version: "v1", Resource: "issuers"},
		"Certificate": {Group: "cert-manager.io", Version: "v1", Resource: "certificates"},
	} {
		list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue // the CRD is not installed
		}
		for i := range list.Items {
			add(kind, &list.Items[i])
		}
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func checkObjects(t *testing.T, env *kubetest.Env, ns, golden string) {
	t.Helper()
	got := objectsIn(t, env, ns)
	path := filepath.Join("testdata", "objects", golden+".txt")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("objects in the namespace differ from %s:\ngot:\n%swant:\n%s", path, got, want)
	}
}

func addNode(t *testing.T, cs kubernetes.Interface, name string, capacity map[string]string) {
	t.Helper()
	rl := corev1.ResourceList{}
	for k, v := range capacity {
		rl[corev1.ResourceName(k)] = resource.MustParse(v)
	}
	node, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Capacity = rl
	node.Status.Allocatable = rl
	if _, err := cs.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// installCertManagerCRDs creates cert-manager's Issuer and Certificate CRDs
// (without their schemas) and waits until the API serves them.
func installCertManagerCRDs(t *testing.T, env *kubetest.Env) {
	t.Helper()
	ext, err := apiextclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	preserve := true
	for _, k := range []struct{ kind, plural string }{{"Issuer", "issuers"}, {"Certificate", "certificates"}} {
		crd := &apiextv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: k.plural + ".cert-manager.io"},
			Spec: apiextv1.CustomResourceDefinitionSpec{
				Group: "cert-manager.io",
				Names: apiextv1.CustomResourceDefinitionNames{Kind: k.kind, ListKind: k.kind + "List", Plural: k.plural, Singular: strings.ToLower(k.kind)},
				Scope: apiextv1.NamespaceScoped,
				Versions: []apiextv1.CustomResourceDefinitionVersion{{
					Name: "v1", Served: true, Storage: true,
					Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: &preserve,
					}},
				}},
			},
		}
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(t.Context(), crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		ok, err := certManagerPresent(env.Clientset)
		return ok && err == nil, nil
	})
	if err != nil {
		t.Fatalf("the cert-manager CRDs are not served: %v", err)
	}
}

// checkWebhookCA checks that the webhook configuration's caBundle is the
// CA of Secret marble-injector-webhook-ca and verifies the serving
// certificate of Secret marble-injector-webhook-certs for the Service name.
func checkWebhookCA(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), "marble-injector-"+ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caSecret, err := cs.CoreV1().Secrets(ns).Get(t.Context(), WebhookCASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := mwc.Webhooks[0].ClientConfig.CABundle
	if string(bundle) != string(caSecret.Data["tls.crt"]) {
		t.Fatalf("caBundle %q is not the CA of Secret %s", bundle, WebhookCASecret)
	}
	leafSecret, err := cs.CoreV1().Secrets(ns).Get(t.Context(), WebhookCertsSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if leafSecret.Type != corev1.SecretTypeTLS || len(leafSecret.Data["tls.key"]) == 0 {
		t.Errorf("Secret %s: type %s, key %d bytes", WebhookCertsSecret, leafSecret.Type, len(leafSecret.Data["tls.key"]))
	}
	block, _ := pem.Decode(leafSecret.Data["tls.crt"])
	if block == nil {
		t.Fatal("no certificate in the webhook Secret")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("caBundle holds no certificate")
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		DNSName: "marble-injector." + ns + ".svc", Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Errorf("the webhook's certificate does not verify with the caBundle: %v", err)
	}
}

func coordinatorEnv(t *testing.T, cs kubernetes.Interface, ns string) (map[string]string, corev1.ResourceList) {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), CoordinatorDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	return envOf(c), c.Resources.Limits
}

func limitKeys(l corev1.ResourceList) []string {
	var keys []string
	for k := range l {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	return keys
}

// uninstallAndCheck uninstalls and expects nothing left in ns; a second
// uninstall finds nothing to do.
func uninstallAndCheck(t *testing.T, env *kubetest.Env, c *Cluster) {
	t.Helper()
	had, err := Uninstall(t.Context(), c, nil)
	if err != nil || !had {
		t.Fatalf("uninstall: %v, %v", had, err)
	}
	if got := objectsIn(t, env, c.Namespace()); got != "" {
		t.Errorf("left behind after uninstall:\n%s", got)
	}
	had, err = Uninstall(t.Context(), c, nil)
	if err != nil || had {
		t.Errorf("second uninstall: %v, %v", had, err)
	}
}

// TestInstallUninstall installs into a real API server (the chart's
// Deployments get no Pods: there is no controller manager) and uninstalls.
// The cases run in order: the last one adds cert-manager's CRDs.
func TestInstallUninstall(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	cs := env.Clientset

	t.Run("simulation", func(t *testing.T) {
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.Simulation = true
		o.Domains = []string{"mycluster.example.com"}
		var progress strings.Builder
		o.Progress = &progress
		if err := Install(ctx, c, o); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(progress.String(), "MarbleRun installed successfully") {
			t.Errorf("progress:\n%s", progress.String())
		}
		checkObjects(t, env, ns, "simulation")
		vars, limits := coordinatorEnv(t, cs, ns)
		if vars["OE_SIMULATION"] != "1" || !strings.HasPrefix(vars["EDG_COORDINATOR_DNS_NAMES"], "mycluster.example.com,localhost,") {
			t.Errorf("simulation env %v", vars)
		}
		if len(limits) != 0 {
			t.Errorf("simulation with SGX limits %v", limits)
		}
		checkWebhookCA(t, cs, ns)

		err := Install(ctx, c, o)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "already installed") || !strings.Contains(ie.Next, "marblerun uninstall -n "+ns) {
			t.Errorf("second install: %v", err)
		}
		uninstallAndCheck(t, env, c)
	})

	t.Run("sgx detected from the nodes, with DCAP flags", func(t *testing.T) {
		addNode(t, cs, "plain-node", map[string]string{"cpu": "4"})
		addNode(t, cs, "azure-sgx-node", map[string]string{sgxresource.AzureEPC: "128"})
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.Domains = []string{"mr.example.com", "10.1.2.3"}
		o.DCAPQPL = "intel"
		o.DCAPPCCSURL = "https://pccs.example.com:8081/sgx/certification/v4/"
		o.DCAPSecureCert = "FALSE"
		o.MeshServerPort = 3001
		o.ClientServerPort = 5443
		if err := Install(ctx, c, o); err != nil {
			t.Fatal(err)
		}
		checkObjects(t, env, ns, "sgx")
		vars, limits := coordinatorEnv(t, cs, ns)
		if vars["OE_SIMULATION"] != "0" || !strings.HasPrefix(vars["EDG_COORDINATOR_DNS_NAMES"], "mr.example.com,10.1.2.3,localhost,") ||
			vars["EDG_COORDINATOR_MESH_ADDR"] != "0.0.0.0:3001" || vars["EDG_COORDINATOR_CLIENT_ADDR"] != "0.0.0.0:5443" || vars["DCAP_LIBRARY"] != "intel" {
			t.Errorf("env %v", vars)
		}
		if got := limitKeys(limits); !slices.Equal(got, []string{sgxresource.AzureEPC}) {
			t.Errorf("limits %v, want the Azure key", got)
		}
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "coordinator-dcap-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"pccs_url":"https://pccs.example.com:8081/sgx/certification/v4/","use_secure_cert":false}`; cm.Data["sgx_default_qcnl.conf"] != want {
			t.Errorf("QCNL config %s, want %s", cm.Data["sgx_default_qcnl.conf"], want)
		}
		inj, err := cs.AppsV1().Deployments(ns).Get(ctx, InjectorDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		args := inj.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"-sgxResource=" + sgxresource.AzureEPC, "-coordAddr=coordinator-mesh-api." + ns + ":3001"} {
			if !slices.Contains(args, want) {
				t.Errorf("injector args %v lack %s", args, want)
			}
		}
		svc, err := cs.CoreV1().Services(ns).Get(ctx, "coordinator-client-api", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p := svc.Spec.Ports[0].Port; p != 5443 {
			t.Errorf("client API Service port %d", p)
		}
		checkWebhookCA(t, cs, ns)
		uninstallAndCheck(t, env, c)
	})

	t.Run("without the injector", func(t *testing.T) {
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.DisableAutoInjection = true
		o.ResourceKey = "example.com/sgx"
		if err := Install(ctx, c, o); err != nil {
			t.Fatal(err)
		}
		checkObjects(t, env, ns, "no-injector")
		_, limits := coordinatorEnv(t, cs, ns)
		if got := limitKeys(limits); !slices.Equal(got, []string{"example.com/sgx"}) {
			t.Errorf("limits %v, want the --resource-key", got)
		}
		uninstallAndCheck(t, env, c)
	})

	t.Run("wait shows progress", func(t *testing.T) {
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.Simulation = true
		o.Wait = true
		o.WaitTimeout = 30 * time.Second
		o.PollInterval = 20 * time.Millisecond
		out := &testsupport.SyncBuffer{}
		o.Progress = out
		done := make(chan error, 1)
		go func() { done <- Install(ctx, c, o) }()
		for _, name := range []string{InjectorDeployment, CoordinatorDeployment} {
			waitFor(t, out, name+" pods ready: 0/1\n")
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			setAvailable(t, cs, d, 1)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		got := out.String()
		for _, want := range []string{"marble-injector pods ready: 1/1\n", "marblerun-coordinator pods ready: 1/1\nMarbleRun installed successfully\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("progress lacks %q:\n%s", want, got)
			}
		}
		uninstallAndCheck(t, env, c)
	})

	t.Run("a failed chart install removes the webhook Secrets", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "marblerun")
		if err := os.CopyFS(dir, charts.MarbleRun()); err != nil {
			t.Fatal(err)
		}
		bad := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\n"
		if err := os.WriteFile(filepath.Join(dir, "templates", "zz-bad.yaml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.Simulation = true
		o.ChartPath = dir
		err := Install(ctx, c, o)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "installing the Helm chart") || !strings.Contains(ie.Next, "marblerun uninstall -n "+ns) {
			t.Fatalf("got %v", err)
		}
		for _, name := range []string{WebhookCASecret, WebhookCertsSecret} {
			if _, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
				t.Errorf("Secret %s left behind", name)
			}
		}
		uninstallAndCheck(t, env, c)
	})

	t.Run("bad values leave nothing behind", func(t *testing.T) {
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.DCAPQPL = "amd"
		err := Install(ctx, c, o)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(ie.Next, "--dcap-qpl") {
			t.Errorf("install with --dcap-qpl amd: %v", err)
		}
		if got := objectsIn(t, env, ns); got != "" {
			t.Errorf("left behind:\n%s", got)
		}
	})

	t.Run("cert-manager", func(t *testing.T) {
		installCertManagerCRDs(t, env)
		ns := env.Namespace(t)
		c := NewCluster(env.Kubeconfig, ns)
		o := baseOptions()
		o.ResourceKey = sgxresource.IntelEPC
		if err := Install(ctx, c, o); err != nil {
			t.Fatal(err)
		}
		checkObjects(t, env, ns, "cert-manager")
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "marble-injector-"+ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := mwc.Annotations["cert-manager.io/inject-ca-from"]; a != ns+"/marble-injector-serving-cert" || len(mwc.Webhooks[0].ClientConfig.CABundle) != 0 {
			t.Errorf("annotation %q, caBundle %d bytes", a, len(mwc.Webhooks[0].ClientConfig.CABundle))
		}
		_, limits := coordinatorEnv(t, cs, ns)
		if got := limitKeys(limits); !slices.Equal(got, []string{sgxresource.IntelEnclave, sgxresource.IntelEPC, sgxresource.IntelProvision}) {
			t.Errorf("limits %v, want Intel's three", got)
		}
		uninstallAndCheck(t, env, c)
	})
}

func TestInstallErrors(t *testing.T) {
	ctx := t.Context()
	t.Run("no kubeconfig", func(t *testing.T) {
		t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
		t.Setenv("HOME", t.TempDir())
		err := Install(ctx, NewCluster("", "marblerun"), baseOptions())
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "no Kubernetes cluster is configured") || !strings.Contains(ie.Next, "KUBECONFIG") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
		if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Uninstall(ctx, NewCluster(path, "marblerun"), nil)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "cannot reach the Kubernetes API server at https://127.0.0.1:1") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("other chart version", func(t *testing.T) {
		o := baseOptions()
		o.Version = "9.9.9"
		err := Install(ctx, NewCluster(filepath.Join(t.TempDir(), "unused"), "marblerun"), o)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "built in, not 9.9.9") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("missing chart path", func(t *testing.T) {
		o := baseOptions()
		o.ChartPath = filepath.Join(t.TempDir(), "nochart")
		err := Install(ctx, NewCluster(filepath.Join(t.TempDir(), "unused"), "marblerun"), o)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(ie.Next, "--marblerun-chart-path") {
			t.Errorf("got %v", err)
		}
	})
}

// TestInstallWaitShowsProgress installs on an API server that runs no Pods:
// the wait says what it waits for, lists the Deployment, repeats every
// Heartbeat which one it still waits for, and gives up after WaitTimeout.
func TestInstallWaitShowsProgress(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	c := NewCluster(env.Kubeconfig, ns)
	o := baseOptions()
	o.Simulation = true
	o.Wait = true
	o.WaitTimeout = 1500 * time.Millisecond
	o.PollInterval = 50 * time.Millisecond
	o.Heartbeat = 300 * time.Millisecond
	progress := &testsupport.SyncBuffer{}
	o.Progress = progress
	err := Install(t.Context(), c, o)
	if err == nil || !strings.Contains(err.Error(), "marble-injector is not ready after 1.5s") {
		t.Fatalf("install --wait on a cluster that runs no Pods: %v\n%s", err, progress)
	}
	out := progress.String()
	for _, want := range []string{
		"Waiting up to 1.5s for the Deployments marble-injector and marblerun-coordinator in namespace " + ns + " to be ready\n",
		"marble-injector pods ready: 0/1\n",
		"  still waiting for marble-injector after ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "still waiting for marble-injector"); n < 2 || n > 6 {
		t.Errorf("%d heartbeats in 1.5s with a 300ms heartbeat:\n%s", n, out)
	}
	if strings.Contains(out, "MarbleRun installed successfully") {
		t.Errorf("success reported:\n%s", out)
	}
}
