package injector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/marblemesh/marblemesh/marble/marbleenv"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testpki"
)

const touchedAnnotation = "test.marblemesh.io/touched"

// hostRecorder remembers the Host headers of requests to the injector.
type hostRecorder struct {
	mu    sync.Mutex
	hosts map[string]int
}

func (h *hostRecorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == PathMutate {
			h.mu.Lock()
			h.hosts[r.Host]++
			h.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (h *hostRecorder) count(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hosts[host]
}

// startToucher serves a second mutating webhook that adds an annotation, so
// that the API server reinvokes the injector (reinvocationPolicy IfNeeded)
// on a Pod it has already injected.
func startToucher(t *testing.T, ca *testpki.CA) *httptest.Server {
	t.Helper()
	leaf, err := ca.Issue("toucher")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rev admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&rev); err != nil || rev.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(rev.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "bad pod", http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: rev.Request.UID, Allowed: true}
		if _, ok := pod.Annotations[touchedAnnotation]; !ok {
			op := `{"op":"add","path":"/metadata/annotations/` + strings.ReplaceAll(touchedAnnotation, "/", "~1") + `","value":"true"}`
			if pod.Annotations == nil {
				op = `{"op":"add","path":"/metadata/annotations","value":{"` + touchedAnnotation + `":"true"}}`
			}
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = []byte("["+op+"]"), &pt
		}
		rev.Response, rev.Request = resp, nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rev)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// webhookConfig registers the injector (and the toucher after it) for Pods
// labelled marblerun/marbletype in namespace ns.
func webhookConfig(ns, injectorURL, toucherURL string, injectorCA, toucherCA []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := int32(10)
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
			Scope: ptr(admissionregistrationv1.NamespacedScope),
		},
	}}
	nsSel := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	objSel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: LabelMarbleType, Operator: metav1.LabelSelectorOpExists,
	}}}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "marble-injector-" + ns},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{
				Name:                    "marble-injector." + ns + ".marblemesh.test",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &injectorURL, CABundle: injectorCA},
				Rules:                   rules,
				NamespaceSelector:       nsSel,
				ObjectSelector:          objSel,
				SideEffects:             &none,
				FailurePolicy:           &fail,
				ReinvocationPolicy:      &ifNeeded,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
			{
				Name:                    "toucher." + ns + ".marblemesh.test",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &toucherURL, CABundle: toucherCA},
				Rules:                   rules,
				NamespaceSelector:       nsSel,
				ObjectSelector:          objSel,
				SideEffects:             &none,
				FailurePolicy:           &fail,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
		},
	}
}

// TestAPIServer runs the injector behind a real kube-apiserver: labelled
// Pods are stored mutated as the rules say (also when the API server
// reinvokes the webhook), unlabelled Pods are untouched, denials reach the
// client, dry-run stores nothing, and a certificate rotation while Pods keep
// being created breaks no request.
func TestAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	cs := env.Clientset
	ns := env.Namespace(t)
	hosts := &hostRecorder{hosts: map[string]int{}}
	ts := startServerWith(t, hosts.wrap)
	port := strings.TrimPrefix(ts.url, "https://127.0.0.1:")
	toucher := startToucher(t, ts.ca)

	mwcs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg := webhookConfig(ns, ts.url+PathMutate, toucher.URL+"/", ts.ca.PEM, ts.ca.PEM)
	if _, err := mwcs.Create(t.Context(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("registering the webhook: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := mwcs.Delete(ctx, cfg.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the webhook configuration: %v", err)
		}
	})

	// The API server picks up webhook configurations asynchronously; a
	// dry-run create shows when the injector is called, and that dry-run
	// stores nothing.
	probe := marblePod("probe", container("app"))
	probe.Name = "dry-run-probe"
	waitFor(t, "the webhook to be active", func() bool {
		got, err := cs.CoreV1().Pods(ns).Create(t.Context(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("dry-run create: %v", err)
		}
		return hasEnvVar(got.Spec.Containers[0].Env, marbleenv.MarbleType)
	})
	if _, err := cs.CoreV1().Pods(ns).Get(t.Context(), probe.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run Pod was stored: %v", err)
	}

	t.Run("rules", func(t *testing.T) {
		for _, c := range reviewCases() {
			if c.pod == nil || c.edit != nil || c.cfg != (Config{}) || c.name == "no-containers" {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				before := c.pod.DeepCopy()
				before.Name = c.name
				before.GenerateName = ""
				calls := value(ts.srv.metrics.requests)
				stored, err := cs.CoreV1().Pods(ns).Create(t.Context(), before.DeepCopy(), metav1.CreateOptions{})
				if c.want == Denied {
					msg := Review(c.encodeReview(t, nil), testConfig()).Decision.Message
					if err == nil || !strings.Contains(err.Error(), "denied the request") || !strings.Contains(err.Error(), msg) {
						t.Fatalf("create: %v, want a denial with %q", err, msg)
					}
					return
				}
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				got, err := cs.CoreV1().Pods(ns).Get(t.Context(), stored.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				_, labelled := before.Labels[LabelMarbleType]
				n := value(ts.srv.metrics.requests) - calls
				switch {
				case !labelled:
					if n != 0 || len(got.Annotations) != 0 {
						t.Errorf("unlabelled Pod: %v injector calls, annotations %v", n, got.Annotations)
					}
					for i := range got.Spec.Containers {
						if len(got.Spec.Containers[i].Env) != len(before.Spec.Containers[i].Env) {
							t.Errorf("unlabelled Pod's container %s got env %v", got.Spec.Containers[i].Name, got.Spec.Containers[i].Env)
						}
					}
				case c.want == Mutated:
					// The toucher changed the Pod after the injector, so the
					// API server called the injector a second time.
					if n != 2 || got.Annotations[touchedAnnotation] != "true" {
						t.Errorf("%v injector calls (want 2), annotations %v", n, got.Annotations)
					}
					checkInjected(t, testConfig(), ns, before, got, false)
				case c.want == Unchanged:
					for i := range got.Spec.Containers {
						if len(got.Spec.Containers[i].Env) != len(before.Spec.Containers[i].Env) {
							t.Errorf("container %s: env %v, want unchanged", got.Spec.Containers[i].Name, got.Spec.Containers[i].Env)
						}
					}
				}
			})
		}
	})

	t.Run("rotation", func(t *testing.T) {
		// Pods keep being created (at most 2000, until stopped) while the
		// certificate moves to a new CA: first the caBundle trusts both
		// CAs, then the new certificate is served, then the caBundle trusts
		// only the new CA and names the host localhost, so the API server
		// must make a new connection and verify the new certificate.
		var created, failed atomic.Int64
		var firstErr atomic.Value
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := marblePod("rotated", container("app"))
				p.GenerateName = "rotation-"
				got, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
				if err == nil && !hasEnvVar(got.Spec.Containers[0].Env, marbleenv.UUIDFile) {
					err = fmt.Errorf("pod %s not injected", got.Name)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				created.Add(1)
			}
		}()
		stopLoad := func() {
			close(stop)
			<-done
			if n := failed.Load(); n > 0 {
				t.Errorf("%d creates failed during rotation, first: %v", n, firstErr.Load())
			}
		}
		defer func() {
			select {
			case <-stop:
			default:
				stopLoad()
			}
		}()
		waitFor(t, "pods being created", func() bool { return created.Load() >= 5 })

		ca2, err := testpki.NewCA("rotated injector CA")
		if err != nil {
			t.Fatal(err)
		}
		bundle := append(append([]byte{}, ts.ca.PEM...), ca2.PEM...)
		updateInjector(t, cs, cfg.Name, ts.url+PathMutate, bundle)
		mark := created.Load()
		waitFor(t, "pods created with the two-CA bundle", func() bool { return created.Load() >= mark+5 })

		leaf2, err := ca2.Issue("marble-injector rotated")
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf2.Publish(ts.secret); err != nil {
			t.Fatal(err)
		}
		if got := servedSerial(t, strings.TrimPrefix(ts.url, "https://"), ca2); got.Cmp(leaf2.Serial) != 0 {
			t.Fatalf("serves serial %v after rotation, want %v", got, leaf2.Serial)
		}

		newHost := "localhost:" + port
		updateInjector(t, cs, cfg.Name, "https://"+newHost+PathMutate, ca2.PEM)
		waitFor(t, "the API server to call localhost", func() bool { return hosts.count(newHost) >= 5 })
		mark = created.Load()
		waitFor(t, "pods created with the new CA only", func() bool { return created.Load() >= mark+5 })
		stopLoad()
		if value(ts.srv.metrics.certReloadOK) < 1 {
			t.Errorf("no certificate reload counted")
		}
		t.Logf("%d Pods created during rotation, %d injector calls via localhost", created.Load(), hosts.count(newHost))
	})
}

// updateInjector points the injector's webhook entry at url with caBundle.
func updateInjector(t *testing.T, cs kubernetes.Interface, name, url string, caBundle []byte) {
	t.Helper()
	mwcs := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := mwcs.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Webhooks[0].ClientConfig.URL = &url
	cur.Webhooks[0].ClientConfig.CABundle = caBundle
	if _, err := mwcs.Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating the webhook configuration: %v", err)
	}
}
