package manifest

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// templateFixture holds real secrets to render with.
type templateFixture struct {
	data *TemplateData
	cert Secret
	ed   Secret
	sym  Secret
	old  Secret
}

func newTemplateFixture(t *testing.T) *templateFixture {
	t.Helper()
	ca := newCA(t)
	cert, err := GenerateSecret("cert", Secret{Type: SecretTypeCertECDSA, Size: 384, Shared: true}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	ed, err := GenerateSecret("ed", Secret{Type: SecretTypeCertED25519}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	sym := keySecret(Secret{Type: SecretTypeSymmetricKey, Size: 64}, []byte{0, 1, 2, 3, 0xfa, 0xfb, 0xfc, 0xfd})
	old := keySecret(Secret{Type: SecretTypeSymmetricKey, Size: 64}, []byte("previous"))
	data := &TemplateData{
		Secrets: map[string]Secret{
			"cert":     cert,
			"ed":       ed,
			"sym":      sym,
			"password": keySecret(Secret{Type: SecretTypePlain, UserDefined: true}, []byte("hunter2")),
			"binary":   keySecret(Secret{Type: SecretTypePlain, UserDefined: true}, []byte("a\x00b")),
			"unset":    {Type: SecretTypeCertECDSA, Size: 256, UserDefined: true},
		},
		MarbleRun: ReservedSecrets{
			RootCA:     Secret{Cert: Certificate(*ca.Cert)},
			MarbleCert: cert,
		},
	}
	data.Previous.Secrets = map[string]Secret{"sym": old}
	return &templateFixture{data: data, cert: cert, ed: ed, sym: sym, old: old}
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// render compiles one marble with the given files and env and renders it.
func render(t *testing.T, data *TemplateData, files, env map[string]File) (map[string][]byte, map[string][]byte, error) {
	t.Helper()
	m := &Manifest{Marbles: map[string]Marble{"m": {Parameters: Parameters{Files: files, Env: env}}}}
	compiled, err := m.Compile()
	if err != nil {
		return nil, nil, err
	}
	return compiled["m"].Render(data)
}

func TestTemplateFunctions(t *testing.T) {
	fx := newTemplateFixture(t)
	tests := []struct {
		name, tmpl, want string
		env              bool
	}{
		{"pem certificate", "{{ pem .Secrets.cert.Cert }}", pemOf("CERTIFICATE", fx.cert.Cert.Raw), false},
		{"pem private key", "{{ pem .Secrets.cert.Private }}", pemOf("PRIVATE KEY", fx.cert.Private), false},
		{"pem public key", "{{ pem .Secrets.cert.Public }}", pemOf("PUBLIC KEY", fx.cert.Public), false},
		{"pem bare certificate secret", "{{ pem .Secrets.ed }}", pemOf("PUBLIC KEY", fx.ed.Public), false},
		{"pem in env", "{{ pem .Secrets.cert.Cert }}", pemOf("CERTIFICATE", fx.cert.Cert.Raw), true},
		{"pem root CA", "{{ pem .MarbleRun.RootCA.Cert }}", pemOf("CERTIFICATE", fx.data.MarbleRun.RootCA.Cert.Raw), false},
		{"pem marble key", "{{ .MarbleRun.MarbleCert.Private | pem }}", pemOf("PRIVATE KEY", fx.cert.Private), true},
		{"hex key", "{{ hex .Secrets.sym }}", "00010203fafbfcfd", false},
		{"hex in env", "K={{ hex .Secrets.sym }}", "K=00010203fafbfcfd", true},
		{"hex certificate", "{{ hex .Secrets.cert.Cert }}", hex.EncodeToString(fx.cert.Cert.Raw), false},
		{"hex raw field", "{{ hex .Secrets.cert.Cert.Raw }}", hex.EncodeToString(fx.cert.Cert.Raw), false},
		{"base64 key", "{{ base64 .Secrets.sym }}", base64.StdEncoding.EncodeToString(fx.sym.Private), false},
		{"base64 in env", "{{ base64 .Secrets.sym.Private }}", base64.StdEncoding.EncodeToString(fx.sym.Private), true},
		{"base64 bare certificate secret", "{{ base64 .Secrets.cert }}", base64.StdEncoding.EncodeToString(fx.cert.Public), true},
		{"raw key", "{{ raw .Secrets.sym }}", string(fx.sym.Private), false},
		{"raw plain", "{{ raw .Secrets.password }}", "hunter2", false},
		{"raw plain with NUL in a file", "{{ raw .Secrets.binary }}", "a\x00b", false},
		{"string plain", "pw={{ string .Secrets.password }}", "pw=hunter2", true},
		{"previous secret", "{{ hex .Previous.Secrets.sym }}", hex.EncodeToString([]byte("previous")), false},
		{"previous in env", "{{ base64 .Previous.Secrets.sym }}", base64.StdEncoding.EncodeToString([]byte("previous")), true},
		{"bare symmetric key", "{{ .Secrets.sym }}", base64.StdEncoding.EncodeToString(fx.sym.Private), true},
		{"bare plain", "{{ .Secrets.password }}", "hunter2", true},
		{"bare certificate secret", "{{ .Secrets.cert }}", pemOf("CERTIFICATE", fx.cert.Cert.Raw), false},
		{"bare certificate", "{{ .Secrets.cert.Cert }}", pemOf("CERTIFICATE", fx.cert.Cert.Raw), false},
		{"certificate field", "{{ .Secrets.cert.Cert.Subject.CommonName }}", DefaultCommonName, true},
		{"no actions", "just text", "just text", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			section := map[string]File{"K": {Data: tt.tmpl}}
			var files, env map[string][]byte
			var err error
			if tt.env {
				files, env, err = render(t, fx.data, nil, section)
			} else {
				files, env, err = render(t, fx.data, section, nil)
			}
			if err != nil {
				t.Fatalf("Render() = %v", err)
			}
			got := files["K"]
			if tt.env {
				got = env["K"]
			}
			if string(got) != tt.want {
				t.Errorf("Render() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	fx := newTemplateFixture(t)
	tests := []struct {
		name, tmpl, want string
		env              bool
	}{
		{"string on a key", "{{ string .Secrets.sym }}", `string: argument must be a plain secret, got a "symmetric-key" secret`, true},
		{"string on a field", "{{ string .Secrets.password.Private }}", "string: argument must be a plain secret, got manifest.PrivateKey", true},
		{"string with NUL", "{{ string .Secrets.binary }}", "string: the secret contains a NUL byte", true},
		{"bare plain with NUL in env", "{{ .Secrets.binary }}", "environment value contains a NUL byte", true},
		{"missing secret", "{{ hex .Secrets.ghost }}", `map has no entry for key "ghost"`, false},
		{"missing previous secret", "{{ hex .Previous.Secrets.cert }}", `map has no entry for key "cert"`, true},
		{"unset user-defined certificate", "{{ pem .Secrets.unset.Cert }}", "pem: the value is empty (a user-defined secret that is not set?)", false},
		{"unset key", "{{ hex .Secrets.unset.Private }}", "hex: the value is empty", true},
		{"pem of a symmetric key", "{{ pem .Secrets.sym }}", `pem: a "symmetric-key" secret has no PEM form; use hex or base64`, false},
		{"pem of a string", `{{ pem "x" }}`, "pem: unsupported argument of type string", false},
		{"raw of a number", `{{ raw 3 }}`, "raw: unsupported argument of type int", false},
		{"unknown field", "{{ .Secrets.sym.Key }}", "can't evaluate field Key", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			section := map[string]File{"K": {Data: tt.tmpl}}
			var err error
			if tt.env {
				_, _, err = render(t, fx.data, nil, section)
			} else {
				_, _, err = render(t, fx.data, section, nil)
			}
			if err == nil {
				t.Fatal("Render() succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Render() = %v, want %q", err, tt.want)
			}
			prefix := `Files["K"]: `
			if tt.env {
				prefix = `Env["K"]: `
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("Render() error %q does not start with %q", err, prefix)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "previous") {
				t.Errorf("Render() error leaks a secret: %v", err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	m := &Manifest{Marbles: map[string]Marble{
		"a": {Parameters: Parameters{
			Files: map[string]File{"/ok": {Data: "x"}, "/bad": {Data: "{{ env }}"}},
			Env:   map[string]File{"RAW": {Data: "{{ raw .Secrets.x }}"}, "LIT": {Data: "{{", NoTemplates: true}},
		}},
		"b": {Parameters: Parameters{Files: map[string]File{"/x": {Data: "{{ end }}"}}}},
	}}
	compiled, err := m.Compile()
	if compiled != nil || err == nil {
		t.Fatalf("Compile() = %v, %v; want an error", compiled, err)
	}
	want := []string{
		`Marbles["a"].Parameters.Files["/bad"]: template: /bad:1: function "env" not defined`,
		`Marbles["a"].Parameters.Env["RAW"]: template: RAW:1: function "raw" not defined`,
		`Marbles["b"].Parameters.Files["/x"]: template: /x:1: unexpected {{end}}`,
	}
	if got := errorLines(err); !slices.Equal(got, want) {
		t.Errorf("Compile() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenderNoTemplatesAndArgv(t *testing.T) {
	m := &Manifest{Marbles: map[string]Marble{"m": {Parameters: Parameters{
		Files: map[string]File{"/verbatim": {Data: "{{ .Secrets.x }}\x00", NoTemplates: true}},
		Env:   map[string]File{"V": {Data: "{{ hex .Secrets.x }}", NoTemplates: true}, "EMPTY": {}},
		Argv:  []string{"{{ .Secrets.x }}"},
	}}}}
	compiled, err := m.Compile()
	if err != nil {
		t.Fatal(err)
	}
	c := compiled["m"]
	files, env, err := c.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(files["/verbatim"]) != "{{ .Secrets.x }}\x00" || string(env["V"]) != "{{ hex .Secrets.x }}" {
		t.Errorf("Render() = %q, %q", files, env)
	}
	if v, ok := env["EMPTY"]; !ok || len(v) != 0 {
		t.Errorf("empty env value = %q, %v", v, ok)
	}
	if names, all := c.SecretNames(); len(names) != 0 || all {
		t.Errorf("SecretNames() = %v, %v; verbatim entries and Argv reference nothing", names, all)
	}
	// Rendered values are fresh copies.
	files["/verbatim"][0] = 'X'
	again, _, _ := c.Render(nil)
	if again["/verbatim"][0] != '{' {
		t.Error("Render() results share memory between calls")
	}
}

func TestSecretNames(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]File
		env   map[string]File
		want  []string
		all   bool
	}{
		{"fields", map[string]File{
			"/a": {Data: "{{ pem .Secrets.b.Cert }}{{ hex .Secrets.a }}"},
			"/b": {Data: "{{ .Secrets.a.Private | hex }}{{ .MarbleRun.RootCA.Cert }}"},
		}, map[string]File{"E": {Data: "{{ string .Secrets.c }}"}}, []string{"a", "b", "c"}, false},
		{"previous", map[string]File{"/p": {Data: "{{ hex .Previous.Secrets.old }}"}}, nil, []string{"old"}, false},
		{"root variable", map[string]File{"/v": {Data: "{{ range .Secrets.a.Cert.DNSNames }}{{ hex $.Secrets.d }}{{ end }}"}}, nil, []string{"a", "d"}, false},
		{"conditionals", map[string]File{"/c": {Data: "{{ if .Secrets.x }}{{ hex .Secrets.y }}{{ else }}{{ hex .Secrets.z }}{{ end }}"}}, nil, []string{"x", "y", "z"}, false},
		{"with a secret", map[string]File{"/w": {Data: "{{ with .Secrets.k }}{{ hex .Private }}{{ end }}"}}, nil, []string{"k"}, false},
		{"variable", map[string]File{"/v": {Data: "{{ $k := .Secrets.k }}{{ hex $k }}"}}, nil, []string{"k"}, false},
		{"define", map[string]File{"/d": {Data: `{{ define "t" }}{{ hex .Secrets.inner }}{{ end }}{{ template "t" . }}`}}, nil, []string{"inner"}, true},
		{"verbatim ignored", map[string]File{"/n": {Data: "{{ .Secrets.x }}", NoTemplates: true}}, nil, nil, false},
		{"range over secrets", map[string]File{"/r": {Data: "{{ range .Secrets }}{{ hex . }}{{ end }}"}}, nil, nil, true},
		{"range over previous", nil, map[string]File{"R": {Data: "{{ range .Previous.Secrets }}{{ hex . }}{{ end }}"}}, nil, true},
		{"index", map[string]File{"/i": {Data: `{{ hex (index .Secrets "k") }}`}}, nil, nil, true},
		{"with secrets", map[string]File{"/w": {Data: `{{ with .Secrets }}{{ hex .k }}{{ end }}`}}, nil, nil, true},
		{"whole data", map[string]File{"/d": {Data: `{{ . }}`}}, nil, nil, true},
		{"root variable alone", map[string]File{"/d": {Data: `{{ range .Secrets.a.Cert.DNSNames }}{{ $ }}{{ end }}`}}, nil, []string{"a"}, true},
		{"previous root", map[string]File{"/d": {Data: `{{ with .Previous }}{{ hex .Secrets.k }}{{ end }}`}}, nil, []string{"k"}, true},
		{"chain", map[string]File{"/d": {Data: `{{ (.Secrets).k }}`}}, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Manifest{Marbles: map[string]Marble{"m": {Parameters: Parameters{Files: tt.files, Env: tt.env}}}}
			compiled, err := m.Compile()
			if err != nil {
				t.Fatal(err)
			}
			names, all := compiled["m"].SecretNames()
			if !slices.Equal(names, tt.want) || all != tt.all {
				t.Errorf("SecretNames() = %v, %v; want %v, %v", names, all, tt.want, tt.all)
			}
			// The result is a copy.
			if len(names) > 0 {
				names[0] = "changed"
				if again, _ := compiled["m"].SecretNames(); again[0] == "changed" {
					t.Error("SecretNames() exposes internal state")
				}
			}
		})
	}
}

func TestSecretNamesIncludeTLSCertificates(t *testing.T) {
	m := &Manifest{
		Marbles: map[string]Marble{
			"web":  {TLS: []string{"public", "ghost"}, Parameters: Parameters{Files: map[string]File{"/k": {Data: "{{ hex .Secrets.zKey }}"}}}},
			"none": {Parameters: Parameters{Files: map[string]File{"/k": {Data: "{{ hex .Secrets.zKey }}"}}}},
		},
		TLS: map[string]TLSTag{"public": {
			Incoming: []TLSEntry{{Port: "443", Cert: "serverCert", DisableClientAuth: true}, {Port: "8443", Cert: "zKey"}, {Port: "80"}},
			Outgoing: []TLSEntry{{Addr: "x", Port: "1", Cert: "outCert"}},
		}},
	}
	compiled, err := m.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if names, all := compiled["web"].SecretNames(); !slices.Equal(names, []string{"serverCert", "zKey"}) || all {
		t.Errorf("SecretNames(web) = %v, %v", names, all)
	}
	if names, _ := compiled["none"].SecretNames(); !slices.Equal(names, []string{"zKey"}) {
		t.Errorf("SecretNames(none) = %v", names)
	}
}

func TestRenderConcurrently(t *testing.T) {
	fx := newTemplateFixture(t)
	m := &Manifest{Marbles: map[string]Marble{"m": {Parameters: Parameters{
		Files: map[string]File{"/c": {Data: "{{ pem .Secrets.cert.Cert }}"}},
		Env:   map[string]File{"K": {Data: "{{ hex .Secrets.sym }}"}},
	}}}}
	compiled, err := m.Compile()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				files, env, err := compiled["m"].Render(fx.data)
				if err != nil || string(env["K"]) != "00010203fafbfcfd" || !bytes.HasPrefix(files["/c"], []byte("-----BEGIN CERTIFICATE")) {
					t.Errorf("Render() = %q, %q, %v", files, env, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestRenderedPEMParses(t *testing.T) {
	fx := newTemplateFixture(t)
	files, _, err := render(t, fx.data, map[string]File{"/tls": {Data: "{{ pem .Secrets.cert.Cert }}{{ pem .Secrets.cert.Private }}"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rest := files["/tls"]
	var certBlock, keyBlock *pem.Block
	certBlock, rest = pem.Decode(rest)
	keyBlock, _ = pem.Decode(rest)
	if certBlock == nil || keyBlock == nil {
		t.Fatalf("rendered file is not two PEM blocks: %q", files["/tls"])
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes); err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != DefaultCommonName {
		t.Errorf("CommonName = %q", cert.Subject.CommonName)
	}
}

func TestSecretLogValueRedacts(t *testing.T) {
	fx := newTemplateFixture(t)
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	logger.Info("secret", "s", fx.data.Secrets["password"], "key", fx.sym.Private)
	out := buf.String()
	if strings.Contains(out, "hunter2") || strings.Contains(out, hex.EncodeToString(fx.sym.Private)) || strings.Contains(out, "[0 1 2 3") {
		t.Errorf("log output leaks a secret: %s", out)
	}
	if !strings.Contains(out, "s.type=plain") || !strings.Contains(out, "key=[redacted]") {
		t.Errorf("log output lacks the description: %s", out)
	}
}
