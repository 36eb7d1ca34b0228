package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/internal/version"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	v := version.Get()
	e.mask(v.Version, "<VERSION>")
	e.mask(v.Commit, "<COMMIT>")
	e.golden("version", e.ok("version").stdout)

	var got struct{ Version, Commit, GoVersion string }
	if err := json.Unmarshal([]byte(e.ok("version", "--format", "json").stdout), &got); err != nil || got.Version != v.Version || got.Commit != v.Commit || got.GoVersion == "" {
		t.Fatalf("version --format json: %+v %v", got, err)
	}
	e.fail([]string{"--format", "want text or json"}, "version", "--format", "xml")
	e.fail([]string{"takes 0 argument(s)", "See 'marblerun version --help'"}, "version", "extra")
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := e.ok("completion", shell).stdout; !strings.Contains(out, "marblerun") {
			t.Errorf("completion %s does not mention marblerun", shell)
		}
	}
	// Dynamic completion of --format values.
	out := e.ok("__complete", "status", "--format", "").stdout
	if !strings.Contains(out, "text") || !strings.Contains(out, "json") {
		t.Errorf("completing --format: %q", out)
	}
}

func TestManifestSignature(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	raw, err := os.ReadFile("testdata/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	jsonSig := e.ok("manifest", "signature", "testdata/manifest.json").stdout
	if want := api.ManifestFingerprint(raw) + "\n"; jsonSig != want {
		t.Fatalf("signature of the JSON file = %q, want its SHA-256 %q", jsonSig, want)
	}
	e.golden("manifest_signature", jsonSig)

	// YAML: the signature is that of its strict JSON conversion.
	yamlRaw, err := os.ReadFile("testdata/manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	converted, err := yaml.YAMLToJSONStrict(yamlRaw)
	if err != nil {
		t.Fatal(err)
	}
	convertedFile := e.write("converted.json", converted)
	yamlSig := e.ok("manifest", "signature", "testdata/manifest.yaml").stdout
	if convSig := e.ok("manifest", "signature", convertedFile).stdout; yamlSig != convSig {
		t.Errorf("YAML signature %q != signature of its JSON conversion %q", yamlSig, convSig)
	}
	if yamlSig == jsonSig {
		t.Error("the YAML and the hand-written JSON have the same signature, although their bytes differ")
	}

	var out struct {
		ManifestSignature string `json:"manifestSignature"`
	}
	if err := json.Unmarshal([]byte(e.ok("manifest", "signature", "testdata/manifest.json", "--format", "json").stdout), &out); err != nil ||
		out.ManifestSignature+"\n" != jsonSig {
		t.Errorf("--format json: %+v %v", out, err)
	}
}

func TestManifestFileErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for name, tc := range map[string]struct {
		content string
		want    []string
	}{
		"invalid yaml":      {"Packages:\n  backend: [unclosed\n", []string{"neither JSON nor valid YAML"}},
		"duplicate key":     {"Packages: {}\nPackages: {}\n", []string{"neither JSON nor valid YAML", "Packages"}},
		"invalid json":      {`{"Packages": {"a": }`, []string{"not valid JSON", "at byte"}},
		"empty":             {"  \n", []string{"is empty"}},
		"json array":        {`[1, 2]`, []string{"top level must be a JSON object"}},
		"yaml scalar":       {"just a string\n", []string{"top level must be a mapping"}},
		"yaml tab indented": {"Packages:\n\tbackend: {}\n", []string{"neither JSON nor valid YAML"}},
	} {
		file := e.write(strings.ReplaceAll(name, " ", "_")+".yaml", []byte(tc.content))
		e.fail(tc.want, "manifest", "signature", file)
	}
	e.fail([]string{"reading the manifest", "no such file or directory"}, "manifest", "signature", e.path("missing.json"))
	e.fail([]string{"takes 1 argument(s): <manifest>; got 0"}, "manifest", "signature")
	e.fail([]string{"unknown flag: --bogus", "See 'marblerun manifest signature --help'"}, "manifest", "signature", "--bogus", "x")
}
