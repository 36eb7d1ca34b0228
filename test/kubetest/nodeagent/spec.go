package nodeagent

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// execSpec turns a container of a Pod into what the helper runs: image
// files, volumes, env, command, user.
func (a *Agent) execSpec(ctx context.Context, p *podRun, c corev1.Container) (*execSpec, error) {
	img, ok := a.imageFor(c.Image)
	if !ok {
		return nil, fmt.Errorf("the node agent has no image %q", c.Image)
	}
	pod := p.currentPod()
	p.mu.Lock()
	vols := p.volumes
	netns := p.netns
	p.mu.Unlock()

	env, err := a.containerEnv(ctx, pod, c, img.Env, p.ip)
	if err != nil {
		return nil, err
	}
	lookup := envLookup(env)
	argv := append([]string(nil), img.Entrypoint...)
	args := img.Cmd
	if len(c.Command) > 0 {
		argv = expandAll(c.Command, lookup)
		args = nil
	}
	if len(c.Args) > 0 {
		args = expandAll(c.Args, lookup)
	}
	argv = append(argv, args...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("image %q has no entrypoint and the container no command", c.Image)
	}

	s := &execSpec{
		NetNS:    netns,
		HostDirs: img.HostDirs,
		Argv:     argv,
		Env:      env,
	}
	s.WorkingDir = img.WorkingDir
	if c.WorkingDir != "" {
		s.WorkingDir = c.WorkingDir
	}
	for target, src := range img.Files {
		s.Mounts = append(s.Mounts, mountSpec{Source: src, Target: target, ReadOnly: true})
	}
	s.Mounts = append(s.Mounts, mountSpec{Source: a.proxy.hostsFile(pod.Namespace), Target: "/etc/hosts", ReadOnly: true})
	for _, m := range c.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %s: the Pod has no volume %q", m.MountPath, m.Name)
		}
		if m.SubPath != "" {
			sub := path.Clean("/" + m.SubPath)
			src = filepath.Join(src, sub)
		}
		s.Mounts = append(s.Mounts, mountSpec{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}

	psc := pod.Spec.SecurityContext
	sc := c.SecurityContext
	uid, gid := (*int64)(nil), (*int64)(nil)
	if psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
		s.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
	var groups []int
	if psc != nil {
		if psc.FSGroup != nil {
			groups = append(groups, int(*psc.FSGroup))
		}
		for _, sg := range psc.SupplementalGroups {
			groups = append(groups, int(sg))
		}
	}
	// Without runAsUser the image's user runs: root for the agent's images.
	// Its primary group is runAsGroup when set, and fsGroup and the
	// supplemental groups are added either way, as the kubelet does.
	if uid != nil || gid != nil || len(groups) > 0 {
		u := 0
		if uid != nil {
			u = int(*uid)
		}
		g := u
		if gid != nil {
			g = int(*gid)
		}
		s.UID, s.GID, s.Groups = &u, &g, groups
	}
	nonRoot := (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) || (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)
	if nonRoot && (s.UID == nil || *s.UID == 0) {
		return nil, fmt.Errorf("container %s has runAsNonRoot but would run as root", c.Name)
	}
	return s, nil
}

// containerEnv resolves the container's variables as the kubelet does.
func (a *Agent) containerEnv(ctx context.Context, pod *corev1.Pod, c corev1.Container, imageEnv []string, podIP string) ([]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", pod.Name)
	if a.cfg.APIServer != "" {
		host, port, err := a.proxy.apiServerEnv()
		if err != nil {
			return nil, err
		}
		set("KUBERNETES_SERVICE_HOST", host)
		set("KUBERNETES_SERVICE_PORT", port)
	}
	cms := a.cfg.Client.CoreV1().ConfigMaps(pod.Namespace)
	secrets := a.cfg.Client.CoreV1().Secrets(pod.Namespace)
	for _, from := range c.EnvFrom {
		var data map[string]string
		optional := false
		switch {
		case from.ConfigMapRef != nil:
			optional = from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
			cm, err := cms.Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("envFrom ConfigMap %s: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			optional = from.SecretRef.Optional != nil && *from.SecretRef.Optional
			s, err := secrets.Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("envFrom Secret %s: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, envLookupMap(vals)))
			continue
		}
		v, skip, err := a.valueFrom(ctx, pod, e.ValueFrom, podIP)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

func (a *Agent) valueFrom(ctx context.Context, pod *corev1.Pod, from *corev1.EnvVarSource, podIP string) (v string, skip bool, err error) {
	switch {
	case from.FieldRef != nil:
		v, err := fieldValue(pod, from.FieldRef.FieldPath, podIP)
		return v, false, err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := a.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional, optionalErr(optional, fmt.Errorf("Secret %s: %w", ref.Name, err))
		}
		b, ok := s.Data[ref.Key]
		if !ok {
			return "", optional, optionalErr(optional, fmt.Errorf("Secret %s has no key %q", ref.Name, ref.Key))
		}
		return string(b), false, nil
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := a.cfg.Client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional, optionalErr(optional, fmt.Errorf("ConfigMap %s: %w", ref.Name, err))
		}
		s, ok := cm.Data[ref.Key]
		if !ok {
			return "", optional, optionalErr(optional, fmt.Errorf("ConfigMap %s has no key %q", ref.Name, ref.Key))
		}
		return s, false, nil
	default:
		return "", false, fmt.Errorf("the node agent does not resolve this valueFrom (only fieldRef, secretKeyRef, configMapKeyRef)")
	}
}

func optionalErr(optional bool, err error) error {
	if optional {
		return nil
	}
	return err
}

// fieldValue resolves a downward-API field path.
func fieldValue(pod *corev1.Pod, field, podIP string) (string, error) {
	if k, ok := strings.CutPrefix(field, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(field, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	switch field {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	return "", fmt.Errorf("unsupported field path %q", field)
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

func envLookup(env []string) func(string) (string, bool) {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return envLookupMap(m)
}

func envLookupMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func expandAll(in []string, lookup func(string) (string, bool)) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, lookup)
	}
	return out
}

// expand replaces $(NAME) with the variable's value as the kubelet does:
// $$ is a literal $, and references to unknown names stay as they are.
func expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
