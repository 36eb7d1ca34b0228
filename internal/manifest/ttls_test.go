package manifest

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestTTLSConfig(t *testing.T) {
	ca := newCA(t)
	serverCert, err := GenerateSecret("server", Secret{Type: SecretTypeCertECDSA, Size: 256, Shared: true}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{
		Marbles: map[string]Marble{
			"web":   {TLS: []string{"public", "internal"}},
			"plain": {},
		},
		TLS: map[string]TLSTag{
			"public": {Incoming: []TLSEntry{{Port: "443", Cert: "server", DisableClientAuth: true}}},
			"internal": {
				Incoming: []TLSEntry{{Port: "8080"}},
				Outgoing: []TLSEntry{{Addr: "db", Port: "5432"}, {Addr: "::1", Port: "9000"}},
			},
		},
	}
	secrets := map[string]Secret{"server": serverCert}
	out, err := m.TTLSConfig("web", "ROOT", "CERT", "KEY", secrets)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	own := map[string]any{"cacrt": "ROOT", "clicrt": "CERT", "clikey": "KEY"}
	want := map[string]any{"tls": map[string]any{
		"Outgoing": map[string]any{"db:5432": own, "[::1]:9000": own},
		"Incoming": map[string]any{
			"*:8080": map[string]any{"cacrt": "ROOT", "clicrt": "CERT", "clikey": "KEY", "clientAuth": true},
			"*:443": map[string]any{
				"cacrt":      "ROOT",
				"clicrt":     pemOf("CERTIFICATE", serverCert.Cert.Raw),
				"clikey":     pemOf("PRIVATE KEY", serverCert.Private),
				"clientAuth": false,
			},
		},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TTLSConfig() =\n%s\nwant\n%v", out, want)
	}
	if !strings.HasPrefix(string(out), `{"tls":{"Outgoing":`) {
		t.Errorf("unexpected layout: %s", out)
	}
	again, err := m.TTLSConfig("web", "ROOT", "CERT", "KEY", secrets)
	if err != nil || string(again) != string(out) {
		t.Error("TTLSConfig() is not deterministic")
	}

	if out, err := m.TTLSConfig("plain", "ROOT", "CERT", "KEY", nil); out != nil || err != nil {
		t.Errorf("no tags: TTLSConfig() = %s, %v; want nil, nil", out, err)
	}

	errorCases := []struct {
		name, marble string
		mutate       func(m *Manifest)
		secrets      map[string]Secret
		want         string
	}{
		{"unknown marble", "ghost", func(*Manifest) {}, secrets, `marble type "ghost" is not defined`},
		{"unknown tag", "web", func(m *Manifest) { m.Marbles["web"] = Marble{TLS: []string{"nope"}} }, secrets, `TLS tag "nope" is not defined`},
		{"missing secret", "web", func(*Manifest) {}, nil, `incoming port 443: secret "server" has no certificate and key`},
		{"conflicting ports", "web", func(m *Manifest) {
			m.TLS["internal"] = TLSTag{Incoming: []TLSEntry{{Port: "443"}}}
		}, secrets, "conflicting entries for incoming *:443"},
	}
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			m := &Manifest{Marbles: map[string]Marble{}, TLS: map[string]TLSTag{}}
			m.Marbles["web"] = Marble{TLS: []string{"public", "internal"}}
			m.TLS["public"] = TLSTag{Incoming: []TLSEntry{{Port: "443", Cert: "server", DisableClientAuth: true}}}
			m.TLS["internal"] = TLSTag{}
			tt.mutate(m)
			if _, err := m.TTLSConfig(tt.marble, "ROOT", "CERT", "KEY", tt.secrets); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("TTLSConfig() = %v, want %q", err, tt.want)
			}
		})
	}
}
