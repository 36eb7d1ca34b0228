package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// errUnsupportedVolume marks a volume the agent can never set up; other
// volume errors (a Secret that does not exist yet, an unbound claim) are
// retried, as the kubelet does.
var errUnsupportedVolume = errors.New("unsupported volume type")

// materializeVolumes creates the Pod's volumes under dir and returns the
// folder of each, by volume name.
func (a *Agent) materializeVolumes(ctx context.Context, pod *corev1.Pod, dir string) (map[string]string, error) {
	out := map[string]string{}
	fsGroup := -1
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		fsGroup = int(*sc.FSGroup)
	}
	for _, v := range pod.Spec.Volumes {
		d := filepath.Join(dir, v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			err = os.MkdirAll(d, 0o777)
			if err == nil {
				err = os.Chmod(d, 0o777)
			}
		case v.Secret != nil:
			err = a.secretFiles(ctx, pod.Namespace, d, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode)
		case v.ConfigMap != nil:
			err = a.configMapFiles(ctx, pod.Namespace, d, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode)
		case v.DownwardAPI != nil:
			err = a.downwardFiles(pod, d, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			err = a.projectedFiles(ctx, pod, d, v.Projected)
		case v.PersistentVolumeClaim != nil:
			d, err = a.claimFolder(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
		default:
			err = fmt.Errorf("%w: the node agent supports emptyDir, secret, configMap, downwardAPI, projected and persistentVolumeClaim volumes", errUnsupportedVolume)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if fsGroup >= 0 {
			if err := giveGroup(d, fsGroup); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		out[v.Name] = d
	}
	return out, nil
}

// giveGroup gives group gid read (and, on folders that are writable,
// write) access to everything under d, as the kubelet does for fsGroup.
func giveGroup(d string, gid int) error {
	return filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, -1, gid); err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			// chmod would follow the link out of the volume.
			return nil
		}
		mode := fi.Mode().Perm() | 0o040
		if fi.IsDir() {
			mode |= 0o010 | os.ModeSetgid
			if fi.Mode().Perm()&0o200 != 0 {
				mode |= 0o020
			}
		}
		return os.Chmod(p, mode)
	})
}

// file is one file of a Secret, ConfigMap or downward-API volume.
type file struct {
	path string
	data []byte
	mode *int32
}

// writeFiles writes files into a fresh folder d.
func writeFiles(d string, files []file, defaultMode *int32) error {
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if defaultMode != nil {
		mode = os.FileMode(*defaultMode)
	}
	for _, f := range files {
		rel := path.Clean("/" + f.path)
		if rel == "/" || strings.HasPrefix(f.path, "..") || slices.Contains(strings.Split(f.path, "/"), "..") {
			return fmt.Errorf("invalid file path %q", f.path)
		}
		p := filepath.Join(d, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		m := mode
		if f.mode != nil {
			m = os.FileMode(*f.mode)
		}
		if err := os.WriteFile(p, f.data, m); err != nil {
			return err
		}
		if err := os.Chmod(p, m); err != nil {
			return err
		}
	}
	return nil
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath) ([]file, error) {
	if len(items) == 0 {
		files := make([]file, 0, len(data))
		for k, v := range data {
			files = append(files, file{path: k, data: v})
		}
		return files, nil
	}
	files := make([]file, 0, len(items))
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("no key %q", it.Key)
		}
		files = append(files, file{path: it.Path, data: v, mode: it.Mode})
	}
	return files, nil
}

func (a *Agent) secretData(ctx context.Context, ns, name string, optional *bool) (map[string][]byte, error) {
	s, err := a.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("Secret %s: %w", name, err)
	}
	return s.Data, nil
}

func (a *Agent) configMapData(ctx context.Context, ns, name string, optional *bool) (map[string][]byte, error) {
	cm, err := a.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data, nil
}

func (a *Agent) secretFiles(ctx context.Context, ns, d, name string, items []corev1.KeyToPath, optional *bool, mode *int32) error {
	data, err := a.secretData(ctx, ns, name, optional)
	if err != nil {
		return err
	}
	files, err := keyFiles(data, items)
	if err != nil {
		return fmt.Errorf("Secret %s: %w", name, err)
	}
	return writeFiles(d, files, mode)
}

func (a *Agent) configMapFiles(ctx context.Context, ns, d, name string, items []corev1.KeyToPath, optional *bool, mode *int32) error {
	data, err := a.configMapData(ctx, ns, name, optional)
	if err != nil {
		return err
	}
	files, err := keyFiles(data, items)
	if err != nil {
		return fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	return writeFiles(d, files, mode)
}

func downwardItems(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) ([]file, error) {
	files := make([]file, 0, len(items))
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downward API file %s: only fieldRef is supported", it.Path)
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath, "")
		if err != nil {
			return nil, err
		}
		files = append(files, file{path: it.Path, data: []byte(v), mode: it.Mode})
	}
	return files, nil
}

func (a *Agent) downwardFiles(pod *corev1.Pod, d string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	files, err := downwardItems(pod, items)
	if err != nil {
		return err
	}
	return writeFiles(d, files, mode)
}

// projectedFiles writes a projected volume; service-account tokens come
// from the TokenRequest API.
func (a *Agent) projectedFiles(ctx context.Context, pod *corev1.Pod, d string, pv *corev1.ProjectedVolumeSource) error {
	var files []file
	for _, src := range pv.Sources {
		var part []file
		var err error
		switch {
		case src.Secret != nil:
			var data map[string][]byte
			data, err = a.secretData(ctx, pod.Namespace, src.Secret.Name, src.Secret.Optional)
			if err == nil {
				part, err = keyFiles(data, src.Secret.Items)
			}
		case src.ConfigMap != nil:
			var data map[string][]byte
			data, err = a.configMapData(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Optional)
			if err == nil {
				part, err = keyFiles(data, src.ConfigMap.Items)
			}
		case src.DownwardAPI != nil:
			part, err = downwardItems(pod, src.DownwardAPI.Items)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = a.token(ctx, pod, src.ServiceAccountToken)
			part = []file{{path: src.ServiceAccountToken.Path, data: []byte(tok)}}
		default:
			err = fmt.Errorf("unsupported projected source")
		}
		if err != nil {
			return err
		}
		files = append(files, part...)
	}
	return writeFiles(d, files, pv.DefaultMode)
}

func (a *Agent) token(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := a.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of ServiceAccount %s: %w", sa, err)
	}
	return tr.Status.Token, nil
}

// pvName is the PersistentVolume the agent provisions for a claim.
func pvName(claim *corev1.PersistentVolumeClaim) string { return "nodeagent-" + string(claim.UID) }

// claimChanged provisions a PersistentVolume, bound to the claim, for a
// claim that has none (the cluster has no storage provisioner).
func (a *Agent) claimChanged(claim *corev1.PersistentVolumeClaim) {
	if a.ctx.Err() != nil || claim.DeletionTimestamp != nil || claim.Spec.VolumeName != "" || claim.Status.Phase == corev1.ClaimBound {
		return
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	dir := filepath.Join(a.cfg.Dir, "pv", string(claim.UID))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		a.cfg.Timeline.Addf("node agent: provisioning %s/%s: %v", claim.Namespace, claim.Name, err)
		return
	}
	class := ""
	if claim.Spec.StorageClassName != nil {
		class = *claim.Spec.StorageClassName
	}
	modes := claim.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName(claim), Labels: map[string]string{"nodeagent/node": a.cfg.NodeName}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
		},
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	_, err := a.cfg.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
	case err != nil:
		a.cfg.Timeline.Addf("node agent: provisioning %s/%s: %v", claim.Namespace, claim.Name, err)
	default:
		a.cfg.Timeline.Addf("node agent: provisioned PersistentVolume %s for claim %s/%s", pv.Name, claim.Namespace, claim.Name)
	}
}

// claimDeleted removes the volume provisioned for a deleted claim.
func (a *Agent) claimDeleted(claim *corev1.PersistentVolumeClaim) {
	if a.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	err := a.cfg.Client.CoreV1().PersistentVolumes().Delete(ctx, pvName(claim), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		a.cfg.Timeline.Addf("node agent: deleting the volume of %s/%s: %v", claim.Namespace, claim.Name, err)
		return
	}
	_ = os.RemoveAll(filepath.Join(a.cfg.Dir, "pv", string(claim.UID)))
	a.cfg.Timeline.Addf("node agent: deleted the volume of claim %s/%s", claim.Namespace, claim.Name)
}

// claimFolder returns the folder of a bound claim's volume.
func (a *Agent) claimFolder(ctx context.Context, ns, name string) (string, error) {
	claim, err := a.cfg.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("PersistentVolumeClaim %s: %w", name, err)
	}
	if claim.Spec.VolumeName == "" {
		return "", fmt.Errorf("PersistentVolumeClaim %s is not bound", name)
	}
	pv, err := a.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("PersistentVolume %s: %w", claim.Spec.VolumeName, err)
	}
	root := filepath.Join(a.cfg.Dir, "pv") + string(filepath.Separator)
	if pv.Spec.HostPath == nil || !strings.HasPrefix(filepath.Clean(pv.Spec.HostPath.Path)+string(filepath.Separator), root) {
		return "", fmt.Errorf("%w: PersistentVolume %s was not provisioned by this node agent", errUnsupportedVolume, pv.Name)
	}
	return pv.Spec.HostPath.Path, nil
}
