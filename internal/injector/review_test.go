package injector

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output and delete stale ones")

func testConfig() Config {
	return Config{
		CoordAddr:     "coordinator-mesh-api.marblerun:2001",
		ClusterDomain: "cluster.local",
		SGXResource:   sgxresource.IntelEPC,
	}
}

func withResource(key string) Config {
	c := testConfig()
	c.SGXResource = key
	return c
}

const testNamespace = "emojivoto"

// reviewCase is one AdmissionReview and the expected outcome; the exact
// response is in testdata/<name>.golden.
type reviewCase struct {
	name string
	cfg  Config
	// pod is the object of the request; object replaces it with raw JSON,
	// and body replaces the whole request body.
	pod    *corev1.Pod
	object string
	body   string
	// edit changes the request before it is encoded.
	edit       func(*admissionv1.AdmissionRequest)
	apiVersion string
	want       Outcome
	reason     Reason
}

func container(name string, env ...corev1.EnvVar) corev1.Container {
	return corev1.Container{
		Name:  name,
		Image: "ghcr.io/example/" + name + ":v1.2.3",
		Args:  []string{"--log-format=json"},
		Env:   env,
	}
}

func env(name, value string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: value} }

// marblePod is a Pod as a Deployment's ReplicaSet creates it: generateName,
// no namespace in the object, and the marble type label.
func marblePod(marbleType string, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "voting-5d8f7c9b6-",
			Labels: map[string]string{
				"app":                       "voting",
				"pod-template-hash":         "5d8f7c9b6",
				"app.kubernetes.io/version": "v1",
				LabelMarbleType:             marbleType,
			},
		},
		Spec: corev1.PodSpec{Containers: containers},
	}
}

func with(p *corev1.Pod, f func(*corev1.Pod)) *corev1.Pod {
	f(p)
	return p
}

func limits(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func reviewCases() []reviewCase {
	return []reviewCase{
		{name: "intel", pod: marblePod("voting-svc", container("voting")), want: Mutated},
		{name: "azure", cfg: withResource(sgxresource.AzureEPC), pod: marblePod("voting-svc", container("voting")), want: Mutated},
		{name: "alibaba", cfg: withResource(sgxresource.AlibabaEPC), pod: marblePod("voting-svc", container("voting")), want: Mutated},
		{name: "custom-resource", cfg: withResource("example.com/sgx-epc"), pod: marblePod("voting-svc", container("voting")), want: Mutated},
		{name: "marblecontainer", pod: with(marblePod("voting-svc", container("envoy"), container("voting"), container("logs")), func(p *corev1.Pod) {
			p.Labels[LabelMarbleContainer] = "voting"
		}), want: Mutated},
		{name: "resource-injection-disabled", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Labels[LabelResourceInjection] = "disabled"
		}), want: Mutated},
		{name: "env-set-type", pod: marblePod("voting-svc", container("voting", env("EDG_MARBLE_TYPE", "custom"))), want: Mutated},
		{name: "env-set-coordinator", pod: marblePod("voting-svc", container("voting", env("LOG_LEVEL", "debug"), env("EDG_MARBLE_COORDINATOR_ADDR", "10.0.0.1:2001"))), want: Mutated},
		{name: "env-set-dns-names", pod: marblePod("voting-svc", container("voting", corev1.EnvVar{
			Name: "EDG_MARBLE_DNS_NAMES", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}},
		})), want: Mutated},
		{name: "env-set-uuid-file", pod: marblePod("voting-svc", container("voting", env("EDG_MARBLE_UUID_FILE", "/data/uuid"))), want: Mutated},
		{name: "env-set-all", pod: with(marblePod("voting-svc", container("voting",
			env("EDG_MARBLE_TYPE", "a"), env("EDG_MARBLE_COORDINATOR_ADDR", "b:1"), env("EDG_MARBLE_DNS_NAMES", "c"), env("EDG_MARBLE_UUID_FILE", "/d"))),
			func(p *corev1.Pod) { p.Labels[LabelResourceInjection] = "disabled" }), want: Unchanged, reason: ReasonAlreadyInjected},
		{name: "uuid-mount-exists", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "own-uuid", MountPath: "/voting-svc-uid/"}}
			p.Spec.Volumes = []corev1.Volume{{Name: "own-uuid", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}), want: Mutated},
		{name: "uuid-volume-reused", pod: with(marblePod("voting-svc", container("voting"), container("web")), func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{env("EDG_MARBLE_UUID_FILE", "/voting-svc-uid/uuid-file")}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: UUIDVolumeName, MountPath: "/voting-svc-uid", ReadOnly: true}}
			p.Spec.Volumes = []corev1.Volume{{Name: UUIDVolumeName, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{{Path: "uuid-file", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.uid"}}},
			}}}}
		}), want: Mutated},
		{name: "uuid-volume-conflict", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: UUIDVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}), want: Denied, reason: ReasonUUIDVolumeConflict},
		{name: "limits-set", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
				Limits:   limits("cpu", "500m", "memory", "256Mi", "sgx.intel.com/epc", "64Mi"),
				Requests: limits("cpu", "100m", "memory", "128Mi", "sgx.intel.com/epc", "64Mi"),
			}
		}), want: Mutated},
		{name: "limits-from-requests", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: limits("cpu", "100m", "sgx.intel.com/epc", "32Mi")}
		}), want: Mutated},
		{name: "limits-complete", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
				Limits: limits("sgx.intel.com/epc", "5Mi", "sgx.intel.com/enclave", "1", "sgx.intel.com/provision", "1"),
			}
		}), want: Mutated},
		{name: "several-containers", pod: with(marblePod("voting-svc",
			container("voting"),
			container("sidecar", env("HTTP_PROXY", "")),
			container("metrics", env("EDG_MARBLE_TYPE", "metrics"))), func(p *corev1.Pod) {
			p.Spec.Containers[1].Env = []corev1.EnvVar{}
			p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config"}}
			p.Spec.Containers[2].Resources.Limits = limits("memory", "64Mi")
			p.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "voting-config"},
			}}}}
			p.Spec.Tolerations = []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
		}), want: Mutated},
		{name: "toleration-present", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "sgx.intel.com/epc", Operator: corev1.TolerationOpExists}}
		}), want: Mutated},
		{name: "init-containers", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{container("migrate"), container("wait-for-db")}
		}), want: Mutated},
		{name: "namespace-default-uppercase-type", pod: marblePod("Voting-SVC", container("voting")),
			edit: func(r *admissionv1.AdmissionRequest) { r.Namespace = "" }, want: Mutated},
		{name: "namespace-from-object", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Namespace = "shop"
		}), edit: func(r *admissionv1.AdmissionRequest) { r.Namespace = "" }, want: Mutated},
		{name: "dry-run", pod: marblePod("voting-svc", container("voting")),
			edit: func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr(true) }, want: Mutated},
		{name: "v1beta1", apiVersion: AdmissionV1beta1, pod: marblePod("voting-svc", container("voting")), want: Mutated},
		{name: "no-label", pod: with(marblePod("x", container("voting")), func(p *corev1.Pod) {
			delete(p.Labels, LabelMarbleType)
			p.Labels[LabelMarbleContainer] = "nope"
		}), want: Unchanged, reason: ReasonNoMarbleType},
		{name: "empty-label", pod: marblePod("", container("voting")), want: Denied, reason: ReasonEmptyMarbleType},
		{name: "marblecontainer-missing", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Labels[LabelMarbleContainer] = "migrate"
			p.Spec.InitContainers = []corev1.Container{container("migrate")}
		}), want: Denied, reason: ReasonMarbleContainerMissing},
		{name: "marblecontainer-empty", pod: with(marblePod("voting-svc", container("voting")), func(p *corev1.Pod) {
			p.Labels[LabelMarbleContainer] = ""
		}), want: Denied, reason: ReasonEmptyMarbleContainer},
		{name: "update-operation", pod: marblePod("voting-svc", container("voting")),
			edit: func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }, want: Unchanged, reason: ReasonNotCreate},
		{name: "no-containers", pod: marblePod("voting-svc"), want: Unchanged, reason: ReasonNoContainers},
		{name: "not-a-pod", object: `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"voting","labels":{"marblerun/marbletype":"voting-svc"}},"spec":{}}`,
			edit: func(r *admissionv1.AdmissionRequest) {
				r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
				r.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
			}, want: Denied, reason: ReasonNotPod},
		{name: "not-a-pod-object-kind", object: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`,
			edit: func(r *admissionv1.AdmissionRequest) { r.Kind = metav1.GroupVersionKind{} }, want: Denied, reason: ReasonNotPod},
		{name: "pod-kind-from-object", pod: marblePod("voting-svc", container("voting")),
			edit: func(r *admissionv1.AdmissionRequest) { r.Kind = metav1.GroupVersionKind{} }, want: Mutated},
		{name: "undecodable-object", object: `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"marblerun/marbletype":"x"}},"spec":{"containers":"voting"}}`,
			want: Denied, reason: ReasonUndecodablePod},
		{name: "object-wrong-case", object: `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"marblerun/marbletype":"x"}},"Spec":{"containers":[{"name":"a"}]},"spec":{"containers":[{"name":"a"}]}}`,
			want: Mutated},
		{name: "object-duplicate-field", object: `{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"marblerun/marbletype":"x"}},"spec":{"containers":[{"name":"a"}]},"spec":{"containers":[]}}`,
			want: Denied, reason: ReasonUndecodablePod},
		{name: "object-missing", object: `null`, want: Denied, reason: ReasonUndecodablePod},
		{name: "undecodable-body", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":`, want: Denied, reason: ReasonUndecodableReview},
		{name: "wrong-review-version", body: `{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"u"}}`, want: Denied, reason: ReasonUndecodableReview},
		{name: "review-without-uid", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}`, want: Denied, reason: ReasonUndecodableReview},
	}
}

func ptr[T any](v T) *T { return &v }

// encodeReview builds the request body of a case.
func (c reviewCase) encodeReview(t testing.TB, object []byte) []byte {
	t.Helper()
	if c.body != "" && object == nil {
		return []byte(c.body)
	}
	if object == nil {
		object = c.objectJSON(t)
	}
	req := &admissionv1.AdmissionRequest{
		UID:       "705ab4f5-6393-11e8-b7cc-42010a800002",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: testNamespace,
		Operation: admissionv1.Create,
		UserInfo:  authUser(),
		Object:    runtime.RawExtension{Raw: object},
		Options:   runtime.RawExtension{Raw: []byte(`{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}`)},
	}
	if c.edit != nil {
		c.edit(req)
	}
	v := c.apiVersion
	if v == "" {
		v = AdmissionV1
	}
	rev := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: v, Kind: "AdmissionReview"}, Request: req}
	b, err := json.Marshal(rev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c reviewCase) objectJSON(t testing.TB) []byte {
	t.Helper()
	if c.object != "" {
		return []byte(c.object)
	}
	b, err := json.Marshal(c.pod)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c reviewCase) config() Config {
	if c.cfg == (Config{}) {
		return testConfig()
	}
	return c.cfg
}

// golden renders a result for a golden file: the HTTP status and either the
// plain-text body or the AdmissionReview with its patch decoded.
func golden(t *testing.T, res ReviewResult) []byte {
	t.Helper()
	out := map[string]any{"httpStatus": res.HTTPStatus}
	if res.HTTPStatus != http.StatusOK {
		out["text"] = string(res.Body)
	} else {
		var rev map[string]any
		if err := json.Unmarshal(res.Body, &rev); err != nil {
			t.Fatalf("response is not JSON: %v\n%s", err, res.Body)
		}
		resp := rev["response"].(map[string]any)
		if p, ok := resp["patch"].(string); ok {
			raw, err := base64.StdEncoding.DecodeString(p)
			if err != nil {
				t.Fatalf("patch is not base64: %v", err)
			}
			resp["patch"] = json.RawMessage(raw)
		}
		out["review"] = rev
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestReviewGolden(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range reviewCases() {
		file := filepath.Join("testdata", c.name+".golden")
		seen[file] = true
		t.Run(c.name, func(t *testing.T) {
			body := c.encodeReview(t, nil)
			res := Review(body, c.config())
			if res.Decision.Outcome != c.want || res.Decision.Reason != c.reason {
				t.Fatalf("outcome %v (%s: %s), want %v (%s)", res.Decision.Outcome, res.Decision.Reason,
					res.Decision.Message, c.want, c.reason)
			}
			got := golden(t, res)
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -run TestReviewGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("response differs from %s (rerun with -update if intended):\n%s", file, lineDiff(string(want), string(got)))
			}
			checkResult(t, c, body, res)
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if seen[f] {
			continue
		}
		if *update {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden file %s: no case uses it (run with -update to delete)", f)
	}
}

// checkResult checks a result against the rules, independently of the
// golden file: the response echoes the UID and version, denials explain
// themselves, and the patch applied to the object gives what checkInjected
// expects.
func checkResult(t *testing.T, c reviewCase, body []byte, res ReviewResult) {
	t.Helper()
	if res.HTTPStatus != http.StatusOK {
		if res.HTTPStatus != http.StatusBadRequest || len(res.Body) == 0 {
			t.Errorf("HTTP %d %q for an unusable body", res.HTTPStatus, res.Body)
		}
		return
	}
	var in, out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		t.Fatalf("response is no AdmissionReview: %v", err)
	}
	if out.APIVersion != in.APIVersion || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != in.Request.UID {
		t.Fatalf("response envelope %+v does not answer request %s of %s", out.TypeMeta, in.Request.UID, in.APIVersion)
	}
	r := out.Response
	switch c.want {
	case Denied:
		if r.Allowed || r.Result == nil || r.Result.Message == "" || r.Result.Code != http.StatusBadRequest {
			t.Errorf("denial without a message: %+v", r)
		}
	case Unchanged:
		if !r.Allowed || r.Patch != nil || r.PatchType != nil {
			t.Errorf("unchanged Pod got %+v", r)
		}
	case Mutated:
		if !r.Allowed || r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("mutation response %+v", r)
		}
		patched := applyPatch(t, in.Request.Object.Raw, r.Patch)
		var before, after corev1.Pod
		if err := json.Unmarshal(in.Request.Object.Raw, &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(patched, &after); err != nil {
			t.Fatalf("patched object is no Pod: %v", err)
		}
		ns := in.Request.Namespace
		if ns == "" {
			ns = before.Namespace
		}
		checkInjected(t, c.config(), ns, &before, &after, true)
	}
}

func applyPatch(t testing.TB, object, patch []byte) []byte {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch is not a JSON Patch: %v\n%s", err, patch)
	}
	out, err := p.Apply(object)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, patch)
	}
	return out
}

// TestApplyTwice applies each patch and reviews the result again, as a
// reinvoked webhook would: the second review must change nothing.
func TestApplyTwice(t *testing.T) {
	for _, c := range reviewCases() {
		if c.body != "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			first := Review(c.encodeReview(t, nil), c.config())
			object := c.objectJSON(t)
			if first.Decision.Outcome == Mutated {
				object = applyPatch(t, object, first.Decision.Patch)
			}
			second := Review(c.encodeReview(t, object), c.config())
			want := first.Decision.Outcome
			if want == Mutated {
				want = Unchanged
			}
			if second.Decision.Outcome != want || second.Decision.Patch != nil {
				t.Fatalf("second review: %v %s %s patch %s", second.Decision.Outcome, second.Decision.Reason,
					second.Decision.Message, second.Decision.Patch)
			}
			if first.Decision.Outcome == Mutated && second.Decision.Reason != ReasonAlreadyInjected {
				t.Errorf("second review reason %s, want %s", second.Decision.Reason, ReasonAlreadyInjected)
			}
		})
	}
}

// TestPatchIndependentOfRequestUID shows the volume name does not come from
// the admission UID: two requests for the same Pod give the same patch.
func TestPatchIndependentOfRequestUID(t *testing.T) {
	c := reviewCases()[0]
	a := Review(c.encodeReview(t, nil), testConfig())
	c.edit = func(r *admissionv1.AdmissionRequest) { r.UID = "another-uid" }
	b := Review(c.encodeReview(t, nil), testConfig())
	if a.Decision.Outcome != Mutated || !bytes.Equal(a.Decision.Patch, b.Decision.Patch) {
		t.Fatalf("patches differ:\n%s\n%s", a.Decision.Patch, b.Decision.Patch)
	}
	if !bytes.Contains(b.Body, []byte(`"uid":"another-uid"`)) {
		t.Fatalf("response does not echo the UID: %s", b.Body)
	}
}

func authUser() authenticationv1.UserInfo {
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:kube-system:replicaset-controller",
		UID:      "6f3ec1f6-3c5c-4d4e-9a1c-7b0e5f2b1a10",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
	}
}

// lineDiff shows the lines that differ between two texts.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}
