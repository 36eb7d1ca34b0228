package injector

import (
	"path"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// checkInjected verifies, independently of the patch builder, that after is
// before with the rules applied. In strict mode nothing else may differ; the
// API server adds defaults, so a stored Pod is checked with strict false.
func checkInjected(t *testing.T, cfg Config, namespace string, before, after *corev1.Pod, strict bool) {
	t.Helper()
	marbleType := before.Labels[LabelMarbleType]
	if marbleType == "" {
		t.Fatalf("checkInjected on a Pod without %s", LabelMarbleType)
	}
	if namespace == "" {
		namespace = "default"
	}
	uuidDir := "/" + marbleType + "-uid"
	wantEnv := map[string]string{
		marbleenv.CoordinatorAddr: cfg.CoordAddr,
		marbleenv.MarbleType:      marbleType,
		marbleenv.DNSNames: strings.ToLower(marbleType + "," + marbleType + "." + namespace + "," +
			marbleType + "." + namespace + ".svc." + cfg.ClusterDomain),
		marbleenv.UUIDFile: uuidDir + "/uuid-file",
	}
	injectRes := before.Labels[LabelResourceInjection] != ResourceInjectionDisabled
	only, hasOnly := before.Labels[LabelMarbleContainer]

	if len(after.Spec.Containers) != len(before.Spec.Containers) {
		t.Fatalf("containers: %d before, %d after", len(before.Spec.Containers), len(after.Spec.Containers))
	}
	if strict && !reflect.DeepEqual(before.Spec.InitContainers, after.Spec.InitContainers) {
		t.Errorf("init containers changed:\nbefore %+v\nafter  %+v", before.Spec.InitContainers, after.Spec.InitContainers)
	}
	if !strict && len(before.Spec.InitContainers) > 0 {
		for i, c := range after.Spec.InitContainers {
			for _, e := range c.Env {
				if _, ours := wantEnv[e.Name]; ours && !hasEnvVar(before.Spec.InitContainers[i].Env, e.Name) {
					t.Errorf("init container %s got %s", c.Name, e.Name)
				}
			}
		}
	}

	mounted := false
	for i := range after.Spec.Containers {
		b, a := &before.Spec.Containers[i], &after.Spec.Containers[i]
		if hasOnly && b.Name != only {
			if strict && !reflect.DeepEqual(b, a) {
				t.Errorf("container %s is not %s but changed", b.Name, only)
			}
			continue
		}
		for name, want := range wantEnv {
			n := 0
			var got corev1.EnvVar
			for _, e := range a.Env {
				if e.Name == name {
					n++
					got = e
				}
			}
			if n != 1 {
				t.Errorf("container %s: %d entries of %s, want 1", a.Name, n, name)
				continue
			}
			if prev, ok := findEnvVar(b.Env, name); ok {
				if !sameEnv(prev, got, strict) {
					t.Errorf("container %s: %s overwritten: %+v -> %+v", a.Name, name, prev, got)
				}
			} else if got.Value != want || got.ValueFrom != nil {
				t.Errorf("container %s: %s = %q, want %q", a.Name, name, got.Value, want)
			}
		}
		// The first env entries keep their order; new ones follow.
		for k := range b.Env {
			if !sameEnv(b.Env[k], a.Env[k], strict) {
				t.Errorf("container %s: env[%d] changed", a.Name, k)
			}
		}
		if _, userUUID := findEnvVar(b.Env, marbleenv.UUIDFile); !userUUID && !hasMountAt(b.VolumeMounts, uuidDir) {
			var m *corev1.VolumeMount
			for k := range a.VolumeMounts {
				if a.VolumeMounts[k].MountPath == uuidDir {
					m = &a.VolumeMounts[k]
				}
			}
			if m == nil || m.Name != UUIDVolumeName || !m.ReadOnly {
				t.Errorf("container %s: UUID mount = %+v, want %s read-only at %s", a.Name, m, UUIDVolumeName, uuidDir)
			}
			mounted = true
		} else if len(a.VolumeMounts) != len(b.VolumeMounts) {
			t.Errorf("container %s: mounts %d -> %d, want unchanged", a.Name, len(b.VolumeMounts), len(a.VolumeMounts))
		}
		for lname, lq := range wantLimits(cfg, injectRes) {
			got, ok := a.Resources.Limits[corev1.ResourceName(lname)]
			prev, had := b.Resources.Limits[corev1.ResourceName(lname)]
			req, requested := b.Resources.Requests[corev1.ResourceName(lname)]
			switch {
			case !ok:
				t.Errorf("container %s: limit %s missing", a.Name, lname)
			case had && got.Cmp(prev) != 0:
				t.Errorf("container %s: limit %s changed %s -> %s", a.Name, lname, prev.String(), got.String())
			case !had && requested && got.Cmp(req) != 0:
				t.Errorf("container %s: limit %s = %s, want the request %s", a.Name, lname, got.String(), req.String())
			case !had && !requested && got.Cmp(resource.MustParse(lq)) != 0:
				t.Errorf("container %s: limit %s = %s, want %s", a.Name, lname, got.String(), lq)
			}
		}
		if !injectRes {
			for name, q := range a.Resources.Limits {
				if prev, had := b.Resources.Limits[name]; !had || prev.Cmp(q) != 0 {
					t.Errorf("container %s: limit %s changed with resource injection disabled", a.Name, name)
				}
			}
		}
		for name, q := range b.Resources.Limits {
			if got := a.Resources.Limits[name]; got.Cmp(q) != 0 {
				t.Errorf("container %s: limit %s changed %s -> %s", a.Name, name, q.String(), got.String())
			}
		}
	}

	var vol *corev1.Volume
	n := 0
	for k := range after.Spec.Volumes {
		if after.Spec.Volumes[k].Name == UUIDVolumeName {
			vol = &after.Spec.Volumes[k]
			n++
		}
	}
	nBefore := 0
	for _, v := range before.Spec.Volumes {
		if v.Name == UUIDVolumeName {
			nBefore++
		}
	}
	switch {
	case mounted && (n != 1 || vol.DownwardAPI == nil || len(vol.DownwardAPI.Items) != 1 ||
		vol.DownwardAPI.Items[0].Path != "uuid-file" || vol.DownwardAPI.Items[0].FieldRef == nil ||
		vol.DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.uid"):
		t.Errorf("UUID volume: %d named %s, %+v", n, UUIDVolumeName, vol)
	case !mounted && n != nBefore:
		t.Errorf("UUID volumes %d -> %d without a UUID mount", nBefore, n)
	case strict && !mounted && len(after.Spec.Volumes) != len(before.Spec.Volumes):
		t.Errorf("volumes %d -> %d without a UUID mount", len(before.Spec.Volumes), len(after.Spec.Volumes))
	}

	// The API server adds its own default tolerations, so only ours are
	// counted.
	ours := func(tols []corev1.Toleration) int {
		k := 0
		for _, tol := range tols {
			if tol.Key == cfg.SGXResource && tol.Operator == corev1.TolerationOpExists && tol.Effect == corev1.TaintEffectNoSchedule {
				k++
			}
		}
		return k
	}
	added := ours(after.Spec.Tolerations) - ours(before.Spec.Tolerations)
	want := 0
	if injectRes && !coveredToleration(before.Spec.Tolerations, cfg.SGXResource) {
		want = 1
	}
	if added != want {
		t.Errorf("%d tolerations for %s added, want %d: %+v", added, cfg.SGXResource, want, after.Spec.Tolerations)
	}
	if strict && len(after.Spec.Tolerations)-len(before.Spec.Tolerations) != want {
		t.Errorf("tolerations %d -> %d, want %d added", len(before.Spec.Tolerations), len(after.Spec.Tolerations), want)
	}

	if strict {
		rest := after.DeepCopy()
		rest.Spec.Containers = before.Spec.Containers
		rest.Spec.Volumes = before.Spec.Volumes
		rest.Spec.Tolerations = before.Spec.Tolerations
		if !reflect.DeepEqual(rest, before) {
			t.Errorf("fields outside containers, volumes and tolerations changed")
		}
	}
}

func wantLimits(cfg Config, inject bool) map[string]string {
	if !inject {
		return nil
	}
	switch cfg.SGXResource {
	case "sgx.intel.com/epc":
		return map[string]string{"sgx.intel.com/epc": "10Mi", "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}
	default:
		return map[string]string{cfg.SGXResource: "10"}
	}
}

func coveredToleration(tols []corev1.Toleration, key string) bool {
	for _, t := range tols {
		if t.Operator == corev1.TolerationOpExists && (t.Key == key || t.Key == "") &&
			(t.Effect == "" || t.Effect == corev1.TaintEffectNoSchedule) {
			return true
		}
	}
	return false
}

func findEnvVar(env []corev1.EnvVar, name string) (corev1.EnvVar, bool) {
	for _, e := range env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func hasEnvVar(env []corev1.EnvVar, name string) bool {
	_, ok := findEnvVar(env, name)
	return ok
}

func hasMountAt(mounts []corev1.VolumeMount, dir string) bool {
	for _, m := range mounts {
		if p := path.Clean(m.MountPath); p == dir || p == dir+"/uuid-file" {
			return true
		}
	}
	return false
}

// sameEnv compares variables; outside strict mode it ignores the fields the
// API server defaults (the fieldRef's apiVersion).
func sameEnv(a, b corev1.EnvVar, strict bool) bool {
	if strict {
		return reflect.DeepEqual(a, b)
	}
	if a.Name != b.Name || a.Value != b.Value || (a.ValueFrom == nil) != (b.ValueFrom == nil) {
		return false
	}
	if a.ValueFrom == nil {
		return true
	}
	fa, fb := a.ValueFrom.FieldRef, b.ValueFrom.FieldRef
	if fa == nil || fb == nil {
		return (fa == nil) == (fb == nil)
	}
	return fa.FieldPath == fb.FieldPath
}
