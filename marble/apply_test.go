package marble

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// envRecorder is a setenv that stores into a map.
type envRecorder map[string]string

func (e envRecorder) set(k, v string) error {
	e[k] = v
	return nil
}

func TestApply(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.pem")
	if err := os.WriteFile(existing, []byte("old content that is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(dir, "a", "b", "c", "key.bin")
	p := &rpc.Parameters{
		Files: map[string][]byte{
			nested:   {0, 1, 2, 255},
			existing: []byte("new"),
		},
		Env: map[string][]byte{
			"SHARED_KEY": []byte("00ff"),
			"EMPTY":      {},
		},
		Argv: []string{"server", "--port", "8443"},
	}
	env := envRecorder{}
	argv, err := Apply(p, env.set, []string{"default"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(argv, p.Argv) {
		t.Fatalf("argv = %v, want %v", argv, p.Argv)
	}
	argv[0] = "changed"
	if p.Argv[0] != "server" {
		t.Fatal("returned argv aliases the parameters")
	}
	if env["SHARED_KEY"] != "00ff" || len(env) != 2 {
		t.Fatalf("env = %v", env)
	}
	if v, ok := env["EMPTY"]; !ok || v != "" {
		t.Fatal("empty variable not set")
	}
	for path, want := range p.Files {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s holds %q, want %q", path, got, want)
		}
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode = %o, want 600", path, info.Mode().Perm())
		}
	}
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		info, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Fatalf("folder %s mode = %o, want 700", d, info.Mode().Perm())
		}
	}
}

func TestApplyDefaultArgv(t *testing.T) {
	def := []string{"/usr/bin/prog", "-v"}
	for _, p := range []*rpc.Parameters{nil, {}, {Argv: []string{}}} {
		argv, err := Apply(p, envRecorder{}.set, def)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(argv, def) {
			t.Fatalf("argv = %v, want default %v", argv, def)
		}
	}
}

func TestApplyRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if _, err := Apply(&rpc.Parameters{Files: map[string][]byte{"secrets/shared.key": []byte("k")}}, envRecorder{}.set, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "secrets", "shared.key"))
	if err != nil || string(got) != "k" {
		t.Fatalf("relative file: %q, %v", got, err)
	}
}

func TestApplyRejectsBadParameters(t *testing.T) {
	tests := map[string]*rpc.Parameters{
		"empty env name":  {Env: map[string][]byte{"": []byte("x")}},
		"= in env name":   {Env: map[string][]byte{"A=B": []byte("x")}},
		"NUL in value":    {Env: map[string][]byte{"A": []byte("x\x00y")}},
		"empty file path": {Files: map[string][]byte{"": []byte("x")}},
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			good := filepath.Join(dir, "good")
			if p.Files == nil {
				p.Files = map[string][]byte{}
			}
			p.Files[good] = []byte("x")
			env := envRecorder{}
			if _, err := Apply(p, env.set, nil); err == nil {
				t.Fatal("invalid parameters accepted")
			}
			if _, err := os.Stat(good); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a file was written before validation finished")
			}
			if len(env) != 0 {
				t.Fatalf("variables were set: %v", env)
			}
		})
	}
}

func TestApplySurfacesErrors(t *testing.T) {
	failing := func(string, string) error { return errors.New("env is read-only") }
	_, err := Apply(&rpc.Parameters{Env: map[string][]byte{"A": []byte("1")}}, failing, nil)
	if err == nil || !strings.Contains(err.Error(), "env is read-only") || !strings.Contains(err.Error(), "A") {
		t.Fatalf("err = %v", err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(&rpc.Parameters{Files: map[string][]byte{filepath.Join(file, "below"): []byte("x")}}, envRecorder{}.set, nil)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("err = %v, want one naming the path", err)
	}

	if _, err := Apply(&rpc.Parameters{}, nil, nil); err == nil {
		t.Fatal("nil setenv accepted")
	}
}

func TestPreMain(t *testing.T) {
	coord := startFakeCoordinator(t, answer(&rpc.Parameters{
		Env:  map[string][]byte{"MARBLE_TEST_PREMAIN_VAR": []byte("from coordinator")},
		Argv: []string{"replaced", "--flag"},
	}))
	dir := t.TempDir()
	t.Setenv(EnvMarbleType, "backend")
	t.Setenv(EnvCoordinatorAddr, coord.addr)
	t.Setenv(EnvUUIDFile, filepath.Join(dir, "uuid"))
	t.Setenv(EnvSimulation, "1")
	t.Setenv("MARBLE_TEST_PREMAIN_VAR", "before")
	oldArgs := os.Args
	t.Cleanup(func() { os.Args = oldArgs })

	if err := PreMain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("MARBLE_TEST_PREMAIN_VAR"); got != "from coordinator" {
		t.Fatalf("variable = %q", got)
	}
	if !slices.Equal(os.Args, []string{"replaced", "--flag"}) {
		t.Fatalf("os.Args = %v", os.Args)
	}
	if _, err := os.Stat(filepath.Join(dir, "uuid")); err != nil {
		t.Fatalf("UUID not persisted: %v", err)
	}
}

func TestPreMainWithoutSimulation(t *testing.T) {
	t.Setenv(EnvMarbleType, "backend")
	t.Setenv(EnvCoordinatorAddr, testsupport.FreeAddr(t))
	t.Setenv(EnvUUIDFile, filepath.Join(t.TempDir(), "uuid"))
	t.Setenv(EnvSimulation, "")
	t.Setenv(EnvAttestationDir, t.TempDir())
	err := PreMain(t.Context())
	if !errors.Is(err, ErrNoTEE) || !strings.Contains(err.Error(), "OE_SIMULATION=1") {
		t.Fatalf("err = %v, want ErrNoTEE telling how to run in simulation", err)
	}
}
