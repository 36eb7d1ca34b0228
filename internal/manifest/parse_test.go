package manifest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// sampleJSON is a manifest written as MarbleRun's documentation writes
// them: lower-case field names, both File forms, a certificate template.
const sampleJSON = `{
	"packages": {
		"backend": {"signerid": "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc", "productid": 3, "securityversion": 2, "debug": false, "acceptedtcbstatuses": ["UpToDate", "SWHardeningNeeded"]},
		"frontend": {"UniqueID": "8b4a1e2c5d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"}
	},
	"infrastructures": {"azure": {"qesvn": 2, "pcesvn": 3, "cpusvn": "AQI="}},
	"marbles": {
		"backend": {
			"package": "backend",
			"maxactivations": 2,
			"disablesecretbinding": true,
			"tls": ["web"],
			"parameters": {
				"files": {
					"/plain": "{{ hex .Secrets.key }}",
					"/b64": {"data": "aGVsbG8=", "encoding": "base64", "notemplates": true},
					"/hex": {"Data": "7b7b", "Encoding": "hex", "NoTemplates": true}
				},
				"env": {"KEY": {"data": "{{ base64 .Secrets.key }}"}},
				"argv": ["./backend", "--port", "9000"]
			}
		}
	},
	"secrets": {
		"key": {"type": "symmetric-key", "size": 128},
		"cert": {"type": "cert-ecdsa", "size": 256, "shared": true, "cert": {
			"Subject": {"CommonName": "backend", "Organization": ["Example"]},
			"DNSNames": ["backend", "backend.svc"],
			"IPAddresses": ["10.0.0.1", "::2"],
			"NotAfter": "2030-01-01T00:00:00Z",
			"KeyUsage": 1,
			"ExtKeyUsage": [1]
		}}
	},
	"tls": {"web": {"incoming": [{"port": "8443", "cert": "cert", "disableclientauth": true}], "outgoing": [{"addr": "db", "port": "5432"}]}},
	"roles": {"r": {"resourcetype": "Secrets", "resourcenames": ["cert"], "actions": ["ReadSecret"]}},
	"config": {"sealmode": "productkey", "featuregates": ["SignQuoteEndpoint"], "updatethreshold": 0, "recoverythreshold": 0, "rotaterootsecret": true},
	"somethingNew": {"ignored": true}
}`

func TestParseSample(t *testing.T) {
	m, err := Parse([]byte(sampleJSON))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	backend := m.Packages["backend"]
	if backend.SignerID == "" || backend.ProductID == nil || *backend.ProductID != 3 || backend.SecurityVersion == nil || *backend.SecurityVersion != 2 {
		t.Errorf("package backend = %+v", backend)
	}
	if len(backend.AcceptedTCBStatuses) != 2 {
		t.Errorf("AcceptedTCBStatuses = %v", backend.AcceptedTCBStatuses)
	}
	infra := m.Infrastructures["azure"]
	if infra.QESVN == nil || *infra.QESVN != 2 || string(infra.CPUSVN) != "\x01\x02" {
		t.Errorf("infrastructure = %+v", infra)
	}
	mb := m.Marbles["backend"]
	if mb.Package != "backend" || mb.MaxActivations != 2 || !mb.DisableSecretBinding || len(mb.TLS) != 1 {
		t.Errorf("marble = %+v", mb)
	}
	wantFiles := map[string]File{
		"/plain": {Data: "{{ hex .Secrets.key }}", Encoding: "string"},
		"/b64":   {Data: "hello", Encoding: "base64", NoTemplates: true},
		"/hex":   {Data: "{{", Encoding: "hex", NoTemplates: true},
	}
	for k, want := range wantFiles {
		if got := mb.Parameters.Files[k]; got != want {
			t.Errorf("Files[%q] = %+v, want %+v", k, got, want)
		}
	}
	if got := mb.Parameters.Env["KEY"]; got != (File{Data: "{{ base64 .Secrets.key }}", Encoding: "string"}) {
		t.Errorf("Env[KEY] = %+v", got)
	}
	if strings.Join(mb.Parameters.Argv, " ") != "./backend --port 9000" {
		t.Errorf("Argv = %q", mb.Parameters.Argv)
	}
	cert := m.Secrets["cert"].Cert
	if cert.Subject.CommonName != "backend" || len(cert.DNSNames) != 2 || len(cert.IPAddresses) != 2 ||
		!cert.NotAfter.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) || cert.KeyUsage != 1 || len(cert.ExtKeyUsage) != 1 {
		t.Errorf("certificate template = %+v", cert)
	}
	if got := m.TLS["web"].Incoming[0]; got != (TLSEntry{Port: "8443", Cert: "cert", DisableClientAuth: true}) {
		t.Errorf("TLS incoming = %+v", got)
	}
	if !m.Config.RotateRootSecret || !m.Config.FeatureEnabled(FeatureSignQuoteEndpoint) {
		t.Errorf("config = %+v", m.Config)
	}
	if mode, ok := m.Config.CanonicalSealMode(); !ok || mode != SealModeProductKey {
		t.Errorf("CanonicalSealMode() = %q, %v", mode, ok)
	}
	if err := m.Check(); err != nil {
		t.Errorf("Check() = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	// secretMarker must never appear in an error.
	const secretMarker = "s3cr3t"
	tests := []struct {
		name, doc, want string
	}{
		{"empty", "", "manifest: empty document"},
		{"whitespace", " \n\t ", "manifest: empty document"},
		{"array", `["s3cr3t"]`, "manifest: the top-level value must be a JSON object"},
		{"null", "null", "manifest: the top-level value must be a JSON object"},
		{"string", `"s3cr3t"`, "manifest: the top-level value must be a JSON object"},
		{"truncated", `{"Marbles": {"a": {"Package": "s3cr3t"`, "manifest: invalid JSON at offset"},
		{"bad token", `{"Marbles": {"a": {"Package": s3cr3t}}}`, `manifest: invalid JSON at offset 31 (in Marbles["a"].Package)`},
		{"trailing data", `{"Packages": {}} s3cr3t`, "manifest: unexpected data after the top-level object at offset 18"},
		{"second object", `{} {}`, "manifest: unexpected data after the top-level object"},
		{"wrong scalar type", `{"Marbles": {"web": {"MaxActivations": "s3cr3t"}}}`,
			`manifest: Marbles["web"].MaxActivations: cannot use a JSON string as uint (offset 47)`},
		{"negative number", `{"Packages": {"p": {"SecurityVersion": -5}}}`,
			`manifest: Packages["p"].SecurityVersion: cannot use a JSON number as uint`},
		{"argv element", `{"marbles": {"web": {"parameters": {"argv": ["ok", 1]}}}}`,
			`manifest: Marbles["web"].Parameters.Argv[1]: cannot use a JSON number as string`},
		{"section type", `{"Secrets": ["s3cr3t"]}`,
			`manifest: Secrets: cannot use a JSON array as map[string]manifest.Secret`},
		{"config type", `{"Config": {"FeatureGates": "s3cr3t"}}`,
			`manifest: Config.FeatureGates: cannot use a JSON string as []string`},
		{"file number", `{"Marbles": {"web": {"Parameters": {"Files": {"/a": 1}}}}}`,
			`manifest: Marbles["web"].Parameters.Files["/a"]: value must be a string or an object with Data, Encoding and NoTemplates`},
		{"file bad base64", `{"Marbles": {"web": {"Parameters": {"Env": {"A": {"Data": "s3cr3t!", "Encoding": "base64"}}}}}}`,
			`manifest: Marbles["web"].Parameters.Env["A"]: Data is not valid base64`},
		{"file bad hex", `{"Marbles": {"web": {"Parameters": {"Files": {"/a": {"Data": "s3cr3t", "Encoding": "hex"}}}}}}`,
			`manifest: Marbles["web"].Parameters.Files["/a"]: Data is not valid hex`},
		{"file unknown encoding", `{"Marbles": {"web": {"Parameters": {"Files": {"/a": {"Data": "x", "Encoding": "s3cr3t"}}}}}}`,
			`manifest: Marbles["web"].Parameters.Files["/a"]: unknown Encoding (want string, base64 or hex)`},
		{"file field type", `{"Marbles": {"web": {"Parameters": {"Files": {"/a": {"Data": "x", "NoTemplates": "s3cr3t"}}}}}}`,
			`manifest: Marbles["web"].Parameters.Files["/a"]: field NoTemplates must not be a JSON string`},
		{"certificate bad base64", `{"Secrets": {"c": {"Type": "cert-rsa", "Cert": "s3cr3t!"}}}`,
			`manifest: Secrets["c"].Cert: certificate is not valid base64`},
		{"certificate bad DER", `{"Secrets": {"c": {"Type": "cert-rsa", "Cert": "czNjcjN0"}}}`,
			`manifest: Secrets["c"].Cert: parsing certificate:`},
		{"certificate template type", `{"Secrets": {"c": {"Cert": {"DNSNames": "s3cr3t"}}}}`,
			`manifest: Secrets["c"].Cert: certificate template field DNSNames must not be a JSON string`},
		{"certificate template time", `{"Secrets": {"c": {"Cert": {"NotAfter": "s3cr3t"}}}}`,
			`manifest: Secrets["c"].Cert: certificate template has an invalid time (want RFC 3339)`},
		{"certificate template IP", `{"Secrets": {"c": {"Cert": {"IPAddresses": ["s3cr3t"]}}}}`,
			`manifest: Secrets["c"].Cert: certificate template has an invalid IP address`},
		{"certificate number", `{"Secrets": {"c": {"Cert": 5}}}`,
			`manifest: Secrets["c"].Cert: certificate must be a base64 DER string or an object of certificate template fields`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse() = %+v, want an error", m)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Parse() error = %q, want prefix %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secretMarker) || strings.Contains(err.Error(), "-5") {
				t.Errorf("Parse() error quotes the document: %q", err)
			}
		})
	}
}

func TestFileJSON(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     File
		marshal  string
		wantFail bool
	}{
		{"plain string", `"a {{ .x }}"`, File{Data: "a {{ .x }}", Encoding: "string"}, `"a {{ .x }}"`, false},
		{"object default encoding", `{"Data": "x"}`, File{Data: "x", Encoding: "string"}, `"x"`, false},
		{"object string no templates", `{"data": "x", "notemplates": true}`, File{Data: "x", Encoding: "string", NoTemplates: true},
			`{"Data":"x","Encoding":"string","NoTemplates":true}`, false},
		{"base64", `{"Data": "AAEC", "Encoding": "base64"}`, File{Data: "\x00\x01\x02", Encoding: "base64"},
			`{"Data":"AAEC","Encoding":"base64"}`, false},
		{"hex", `{"Data": "00ff", "Encoding": "hex", "NoTemplates": true}`, File{Data: "\x00\xff", Encoding: "hex", NoTemplates: true},
			`{"Data":"00ff","Encoding":"hex","NoTemplates":true}`, false},
		{"encoding is case-sensitive", `{"Data": "00", "Encoding": "HEX"}`, File{}, "", true},
		{"array", `[]`, File{}, "", true},
		{"bool", `true`, File{}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f File
			err := json.Unmarshal([]byte(tt.in), &f)
			if tt.wantFail {
				if err == nil {
					t.Fatalf("Unmarshal() = %+v, want an error", f)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f != tt.want {
				t.Errorf("Unmarshal() = %+v, want %+v", f, tt.want)
			}
			out, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.marshal {
				t.Errorf("Marshal() = %s, want %s", out, tt.marshal)
			}
			var again File
			if err := json.Unmarshal(out, &again); err != nil || again != f {
				t.Errorf("round trip = %+v, %v; want %+v", again, err, f)
			}
		})
	}
	if _, err := json.Marshal(File{Data: "x", Encoding: "rot13"}); err == nil {
		t.Error("Marshal() with an unknown encoding succeeded")
	}
	if out, err := json.Marshal(File{Data: "x"}); err != nil || string(out) != `"x"` {
		t.Errorf("Marshal(File{Data: x}) = %s, %v", out, err)
	}
}

func TestCertificateJSON(t *testing.T) {
	ca := newCA(t)
	s, err := GenerateSecret("c", Secret{Type: SecretTypeCertECDSA, Size: 256, Shared: true}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}

	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(out, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Type", "Size", "Shared", "UserDefined", "Cert", "ValidFor", "Private", "Public"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("Secret JSON lacks %s: %s", k, out)
		}
	}
	if _, ok := fields["Cert"].(string); !ok {
		t.Errorf("Cert is not a base64 string: %v", fields["Cert"])
	}

	var back Secret
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if string(back.Cert.Raw) != string(s.Cert.Raw) || string(back.Private) != string(s.Private) || string(back.Public) != string(s.Public) {
		t.Error("Secret JSON round trip changed the certificate or keys")
	}
	if back.Cert.Subject.CommonName != s.Cert.Subject.CommonName || back.Cert.SerialNumber.Cmp(s.Cert.SerialNumber) != 0 {
		t.Error("decoded certificate is not parsed")
	}

	// Lower-case keys decode too.
	var lower Secret
	if err := json.Unmarshal([]byte(strings.ToLower(`{"TYPE":"cert-ecdsa","CERT":null}`)), &lower); err != nil || lower.Type != SecretTypeCertECDSA {
		t.Errorf("lower-case Secret = %+v, %v", lower, err)
	}

	// An empty certificate is null, in both directions.
	out, err = json.Marshal(Secret{Type: SecretTypeSymmetricKey})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"Cert":null`) {
		t.Errorf("empty Cert marshals as %s", out)
	}
	for _, in := range []string{`null`, `""`} {
		var c Certificate
		c.Subject.CommonName = "stale"
		if err := json.Unmarshal([]byte(in), &c); err != nil || c.Subject.CommonName != "" || c.Raw != nil {
			t.Errorf("Unmarshal(%s) = %+v, %v", in, c.Subject, err)
		}
	}

	// A template drops encoded parts it might carry.
	var tmpl Certificate
	if err := json.Unmarshal([]byte(`{"Raw": "AAEC", "Subject": {"CommonName": "x"}, "PublicKey": {"N": 1}}`), &tmpl); err != nil {
		t.Fatal(err)
	}
	if tmpl.Raw != nil || tmpl.PublicKey != nil || tmpl.Subject.CommonName != "x" {
		t.Errorf("template = %+v", tmpl)
	}
	if out, err := json.Marshal(tmpl); err != nil || string(out) != "null" {
		t.Errorf("Marshal(template) = %s, %v; want null", out, err)
	}
}

func TestJSONPathAt(t *testing.T) {
	doc := []byte(`{"marbles": {"a b": {"parameters": {"argv": ["x", 1]}}}, "Config": {"x": [[1, {"y": 2}]]}}`)
	tests := []struct {
		after string
		want  string
	}{
		{`"x", 1`, `Marbles["a b"].Parameters.Argv[1]`},
		{`"y": 2`, `Config.x[0][1].y`},
		{`{"marbles"`, `Marbles`},
	}
	for _, tt := range tests {
		off := int64(strings.Index(string(doc), tt.after) + len(tt.after))
		if got, _ := jsonPathAt(doc, off); got != tt.want {
			t.Errorf("jsonPathAt(after %q) = %q, want %q", tt.after, got, tt.want)
		}
	}
}
