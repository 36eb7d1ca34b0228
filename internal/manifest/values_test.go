package manifest

import (
	"strings"
	"testing"
)

func TestCheckWithValues(t *testing.T) {
	m, err := Parse([]byte(`{
		"Packages": {"p": {"UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}},
		"Marbles": {
			"files": {"Package": "p", "Parameters": {
				"Files": {"/k": "{{ hex .Secrets.key }}", "/c": "{{ pem .Secrets.cert.Private }}"},
				"Env": {"P": "{{ string .Secrets.plain }}"}}},
			"tls": {"Package": "p", "TLS": ["web"]}
		},
		"Secrets": {
			"key": {"Type": "symmetric-key", "Size": 128, "UserDefined": true},
			"cert": {"Type": "cert-ecdsa", "Size": 256, "UserDefined": true},
			"plain": {"Type": "plain", "UserDefined": true},
			"web": {"Type": "cert-ecdsa", "UserDefined": true}
		},
		"TLS": {"web": {"Incoming": [{"Port": "443", "Cert": "web", "DisableClientAuth": true}]}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(); err != nil {
		t.Fatalf("the manifest is invalid: %v", err)
	}
	ca := newCA(t)
	full, err := GenerateSecret("cert", Secret{Type: SecretTypeCertECDSA, Size: 256}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	certOnly := full
	certOnly.Private = nil
	tests := []struct {
		name   string
		values map[string]Secret
		want   string
	}{
		{"no values", nil, ""},
		{"real values", map[string]Secret{
			"key":   {Type: SecretTypeSymmetricKey, Size: 128, Private: make([]byte, 16), Public: make([]byte, 16)},
			"cert":  full,
			"plain": {Type: SecretTypePlain, Private: []byte("text"), Public: []byte("text")},
			"web":   full,
		}, ""},
		{"certificate without key in a template", map[string]Secret{"cert": certOnly}, `Marbles["files"]`},
		{"certificate without key for TLS", map[string]Secret{"web": certOnly}, `Marbles["tls"].TLS`},
		{"NUL in Env", map[string]Secret{"plain": {Type: SecretTypePlain, Private: []byte("a\x00b"), Public: []byte("a\x00b")}}, "NUL"},
		{"values of unknown secrets are ignored", map[string]Secret{"other": {}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := m.CheckWithValues(tc.values)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
