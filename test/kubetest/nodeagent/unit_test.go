package nodeagent

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"NAME": "world", "A": "1", "B": "2", "EMPTY": ""}
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"plain", "plain"},
		{"hello $(NAME)", "hello world"},
		{"$(A)$(B)", "12"},
		{"x$(EMPTY)y", "xy"},
		{"$$(NAME)", "$(NAME)"},
		{"$$", "$"},
		{"$$$(A)", "$1"},
		{"cost: $$5", "cost: $5"},
		{"$(NOPE)", "$(NOPE)"},
		{"$(NOPE) and $(A)", "$(NOPE) and 1"},
		{"$()", "$()"},
		{"$(NAME", "$(NAME"},
		{"a $(A) $(B", "a 1 $(B"},
		{"trailing $", "trailing $"},
		{"$NAME", "$NAME"},
		{"${NAME}", "${NAME}"},
	}
	for _, tt := range tests {
		if got := expand(tt.in, envLookupMap(vars)); got != tt.want {
			t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := expandAll([]string{"$(A)", "$(B)-$(NAME)"}, envLookup([]string{"A=1", "B=2", "NAME=x=y"})); !slices.Equal(got, []string{"1", "2-x=y"}) {
		t.Errorf("expandAll = %q", got)
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "shop", UID: "uid-123",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": `say "hi"`},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "robot"},
	}
	tests := []struct {
		path, want string
	}{
		{"metadata.name", "web-0"},
		{"metadata.namespace", "shop"},
		{"metadata.uid", "uid-123"},
		{"spec.nodeName", "node-1"},
		{"spec.serviceAccountName", "robot"},
		{"status.podIP", "10.244.0.7"},
		{"status.podIPs", "10.244.0.7"},
		{"status.hostIP", "127.0.0.1"},
		{"status.hostIPs", "127.0.0.1"},
		{"metadata.labels['app']", "web"},
		{"metadata.labels['tier']", "front"},
		{"metadata.labels['missing']", ""},
		{"metadata.annotations['note']", `say "hi"`},
		{"metadata.labels", "app=\"web\"\ntier=\"front\"\n"},
		{"metadata.annotations", "note=\"say \\\"hi\\\"\"\n"},
	}
	for _, tt := range tests {
		got, err := fieldValue(pod, tt.path, "10.244.0.7")
		if err != nil || got != tt.want {
			t.Errorf("fieldValue(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
	for _, path := range []string{"spec.containers", "metadata.generateName", "status.phase", ""} {
		got, err := fieldValue(pod, path, "10.244.0.7")
		if err == nil || !strings.Contains(err.Error(), "unsupported field path") {
			t.Errorf("fieldValue(%q) = %q, %v; want an unsupported-path error", path, got, err)
		}
	}
}

func TestImageFor(t *testing.T) {
	app := Image{Entrypoint: []string{"/app"}}
	reg := Image{Entrypoint: []string{"/reg"}}
	a := &Agent{cfg: Config{Images: map[string]Image{
		"example.com/team/app": app,
		"localhost:5000/x":     reg,
	}}}
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		ref  string
		want string // entrypoint of the image found, "" for none
	}{
		{"example.com/team/app", "/app"},
		{"example.com/team/app:v1.2", "/app"},
		{"example.com/team/app@" + digest, "/app"},
		{"example.com/team/app:v1.2@" + digest, "/app"},
		{"localhost:5000/x", "/reg"},
		{"localhost:5000/x:1", "/reg"},
		{"localhost:5000/x@" + digest, "/reg"},
		{"localhost:5000/x:1@" + digest, "/reg"},
		{"localhost/x:1", ""},
		{"localhost:5001/x:1", ""},
		{"example.com/team/other:v1", ""},
		{"example.com/team:app", ""},
		{"app", ""},
	}
	for _, tt := range tests {
		img, ok := a.imageFor(tt.ref)
		got := ""
		if ok {
			got = img.Entrypoint[0]
		}
		if got != tt.want {
			t.Errorf("imageFor(%q) = %q (found %v), want %q", tt.ref, got, ok, tt.want)
		}
	}
}

func TestResolvePort(t *testing.T) {
	ctr := corev1.Container{Ports: []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8080},
		{Name: "metrics", ContainerPort: 9090},
	}}
	tests := []struct {
		port intstr.IntOrString
		want int
		ok   bool
	}{
		{intstr.FromInt32(8443), 8443, true},
		{intstr.FromInt32(80), 80, true},
		{intstr.FromInt32(0), 0, false},
		{intstr.FromString("http"), 8080, true},
		{intstr.FromString("metrics"), 9090, true},
		{intstr.FromString("grpc"), 0, false},
		{intstr.FromString(""), 0, false},
	}
	for _, tt := range tests {
		got, ok := resolvePort(tt.port, ctr)
		if got != tt.want || ok != tt.ok {
			t.Errorf("resolvePort(%s) = %d, %v; want %d, %v", tt.port.String(), got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := resolvePort(intstr.FromString("http"), corev1.Container{}); ok {
		t.Error("resolvePort found a name in a container without ports")
	}
}

func TestDeclaredPorts(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.PodSpec
		want []int
	}{
		{"none", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}, nil},
		{"tcp of every container, init containers too, not udp", corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Ports: []corev1.ContainerPort{{ContainerPort: 7000}}}},
			Containers: []corev1.Container{
				{Name: "a", Ports: []corev1.ContainerPort{
					{ContainerPort: 8080},
					{ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
					{ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				}},
				{Name: "b", Ports: []corev1.ContainerPort{{ContainerPort: 9090, Protocol: corev1.ProtocolSCTP}, {ContainerPort: 8080}}},
			},
		}, []int{7000, 8080, 8081}},
	}
	for _, tt := range tests {
		got := declaredPorts(&corev1.Pod{Spec: tt.pod})
		var ports []int
		for p, ok := range got {
			if ok {
				ports = append(ports, p)
			}
		}
		slices.Sort(ports)
		if !slices.Equal(ports, tt.want) {
			t.Errorf("%s: declaredPorts = %v, want %v", tt.name, ports, tt.want)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	data := map[string][]byte{"a": []byte("A"), "b": []byte("B")}
	all, err := keyFiles(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(all, func(x, y file) int { return strings.Compare(x.path, y.path) })
	if len(all) != 2 || all[0].path != "a" || string(all[0].data) != "A" || all[1].path != "b" || all[0].mode != nil {
		t.Errorf("keyFiles without items = %+v", all)
	}

	items, err := keyFiles(data, []corev1.KeyToPath{{Key: "b", Path: "dir/b.txt", Mode: ptr.To[int32](0o400)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].path != "dir/b.txt" || string(items[0].data) != "B" || items[0].mode == nil || *items[0].mode != 0o400 {
		t.Errorf("keyFiles with items = %+v", items)
	}

	if _, err := keyFiles(data, []corev1.KeyToPath{{Key: "a", Path: "a"}, {Key: "c", Path: "c"}}); err == nil || !strings.Contains(err.Error(), `"c"`) {
		t.Errorf("keyFiles with a missing key: %v, want an error naming the key", err)
	}
}

func TestWriteFiles(t *testing.T) {
	t.Run("contents and modes", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "vol")
		files := []file{
			{path: "plain", data: []byte("p")},
			{path: "sub/deep/key.pem", data: []byte("k"), mode: ptr.To[int32](0o400)},
			{path: "tls..crt", data: []byte("c")}, // a valid key: only ".." as a path element is a back step
			{path: "/abs", data: []byte("a")},
		}
		if err := writeFiles(d, files, ptr.To[int32](0o640)); err != nil {
			t.Fatal(err)
		}
		want := map[string]struct {
			data string
			mode os.FileMode
		}{
			"plain":            {"p", 0o640},
			"sub/deep/key.pem": {"k", 0o400},
			"tls..crt":         {"c", 0o640},
			"abs":              {"a", 0o640},
		}
		for p, w := range want {
			full := filepath.Join(d, p)
			b, err := os.ReadFile(full)
			if err != nil || string(b) != w.data {
				t.Errorf("%s: %q, %v; want %q", p, b, err, w.data)
				continue
			}
			fi, _ := os.Stat(full)
			if fi.Mode().Perm() != w.mode {
				t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), w.mode)
			}
		}
	})
	t.Run("default mode", func(t *testing.T) {
		d := t.TempDir()
		if err := writeFiles(d, []file{{path: "f", data: []byte("x")}}, nil); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(d, "f"))
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("f: %v, %v; want mode 644", fi.Mode(), err)
		}
	})
	for _, bad := range []string{"..", "../escape", "a/../../escape", "a/..", "..hidden", "", "/"} {
		t.Run("rejects "+bad, func(t *testing.T) {
			parent := t.TempDir()
			d := filepath.Join(parent, "vol")
			err := writeFiles(d, []file{{path: bad, data: []byte("x")}}, nil)
			if err == nil || !strings.Contains(err.Error(), "invalid file path") {
				t.Errorf("writeFiles(%q): %v, want an invalid-path error", bad, err)
			}
			if _, err := os.Stat(filepath.Join(parent, "escape")); err == nil {
				t.Errorf("writeFiles(%q) wrote outside its folder", bad)
			}
		})
	}
}

func TestGiveGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giveGroup changes the group of files (chown), which needs root")
	}
	const gid = 4242
	base := t.TempDir()
	d := filepath.Join(base, "vol")
	outside := filepath.Join(base, "outside")
	mk := func(p string, mode os.FileMode, dir bool) {
		t.Helper()
		var err error
		if dir {
			err = os.Mkdir(p, mode)
		} else {
			err = os.WriteFile(p, []byte("x"), mode)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mk(d, 0o755, true)
	mk(filepath.Join(d, "file"), 0o644, false)
	mk(filepath.Join(d, "private"), 0o600, false)
	mk(filepath.Join(d, "sub"), 0o700, true)
	mk(filepath.Join(d, "sub", "deep"), 0o400, false)
	mk(filepath.Join(d, "ro"), 0o555, true)
	mk(outside, 0o600, false)
	if err := os.Symlink(outside, filepath.Join(d, "link")); err != nil {
		t.Fatal(err)
	}
	// ro is made read-only last, after its contents.
	mk(filepath.Join(d, "ro", "f"), 0o444, false)

	if err := giveGroup(d, gid); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"":           0o775 | os.ModeSetgid | os.ModeDir,
		"file":       0o644,
		"private":    0o640,
		"sub":        0o770 | os.ModeSetgid | os.ModeDir,
		"sub/deep":   0o440,
		"ro":         0o555 | os.ModeSetgid | os.ModeDir,
		"ro/f":       0o444,
		"link":       os.ModeSymlink | 0o777,
		"../outside": 0o600,
	}
	for p, mode := range want {
		full := filepath.Join(d, p)
		fi, err := os.Lstat(full)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if p == "../outside" {
			if fi.Mode() != mode || st.Gid == gid {
				t.Errorf("the target of a symlink in the volume changed: mode %v, group %d", fi.Mode(), st.Gid)
			}
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
		if st.Gid != gid {
			t.Errorf("%s: group %d, want %d", p, st.Gid, gid)
		}
	}
}

func TestTimeline(t *testing.T) {
	var nilTL *Timeline
	nilTL.Addf("dropped %d", 1) // must not panic

	tl := NewTimeline()
	if tl.String() != "" {
		t.Errorf("a new timeline is %q", tl.String())
	}
	tl.Addf("first %s", "event")
	tl.Addf("second %d%%", 50)
	lines := strings.Split(tl.String(), "\n")
	if len(lines) != 2 {
		t.Fatalf("timeline %q: want 2 lines", tl.String())
	}
	re := regexp.MustCompile(`^ {3}0\.\d{3}s  (.*)$`)
	for i, want := range []string{"first event", "second 50%"} {
		m := re.FindStringSubmatch(lines[i])
		if m == nil || m[1] != want {
			t.Errorf("line %d = %q, want %q after an 8-wide time in seconds", i, lines[i], want)
		}
	}
	if lines[0][:8] > lines[1][:8] {
		t.Errorf("times go backwards: %q", tl.String())
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "x"}}}
	client := fake.NewSimpleClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"pw": []byte("hunter2"), "user": []byte("bob")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"mode": "fast", "PATH": "/override"}},
	)
	a := &Agent{cfg: Config{Client: client}}
	ctr := corev1.Container{
		EnvFrom: []corev1.EnvFromSource{
			{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: ptr.To(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "NAME", Value: "world"},
			{Name: "GREETING", Value: "hello $(NAME) from $(POD) as $(user)"}, // POD is defined later: stays
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "pw"}}},
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "mode"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptr.To(true)}}},
			{Name: "NAME", Value: "again"},
		},
	}
	env, err := a.containerEnv(context.Background(), pod, ctr, []string{"PATH=/bin", "NAME=image"}, "10.244.0.9")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PATH=/bin", "NAME=again", "HOSTNAME=p", "CFG_PATH=/override", "CFG_mode=fast", "pw=hunter2", "user=bob",
		"GREETING=hello world from $(POD) as bob", "POD=p", "APP=x", "IP=10.244.0.9", "PW=hunter2", "MODE=fast",
	}
	// envFrom keys come from maps; compare that block as a set.
	sortBlock := func(s []string) []string {
		out := slices.Clone(s)
		if len(out) >= 7 {
			slices.Sort(out[3:7])
		}
		return out
	}
	if got := sortBlock(env); !slices.Equal(got, want) {
		t.Errorf("containerEnv =\n%q\nwant\n%q", got, want)
	}

	for _, tt := range []struct {
		name string
		env  corev1.EnvVar
		from []corev1.EnvFromSource
		msg  string
	}{
		{name: "missing secret", env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}, msg: "Secret nope"},
		{name: "missing secret key", env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}, msg: `Secret s has no key "k"`},
		{name: "missing config map", env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nocm"}, Key: "k"}}}, msg: "ConfigMap nocm"},
		{name: "unsupported field", env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.priority"}}}, msg: "unsupported field path"},
		{name: "resource field", env: corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}}, msg: "does not resolve"},
		{name: "missing envFrom secret", from: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nos"}}}}, msg: "envFrom Secret nos"},
	} {
		c := corev1.Container{EnvFrom: tt.from}
		if tt.env.Name != "" {
			c.Env = []corev1.EnvVar{tt.env}
		}
		if _, err := a.containerEnv(context.Background(), pod, c, nil, ""); err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.msg)
		}
	}
}
