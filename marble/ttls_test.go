package marble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/marble/ttlsconfig"
)

// ttlsMaterial is a marble's credentials as a rule carries them.
func ttlsMaterial(t testing.TB, p *testPKI, cn string) ttlsconfig.Endpoint {
	t.Helper()
	env := p.marbleEnv(t, cn)
	return ttlsconfig.Endpoint{CACert: env[EnvRootCA], Cert: env[EnvCertificateChain], Key: env[EnvPrivateKey]}
}

func ttlsJSON(t testing.TB, doc ttlsconfig.Document) []byte {
	t.Helper()
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseTransparentTLSErrors(t *testing.T) {
	p := newTestPKI(t, "ttls")
	own := ttlsMaterial(t, p, "own")
	other := ttlsMaterial(t, newTestPKI(t, "other"), "other")
	mismatched := own
	mismatched.Key = other.Key
	noCA := own
	noCA.CACert = ""
	keyAsCA := own
	keyAsCA.CACert = own.Key
	trailingCA := own
	trailingCA.CACert += "garbage"

	out := func(m map[string]ttlsconfig.Endpoint) []byte {
		return ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{Outgoing: m}})
	}
	in := func(m map[string]ttlsconfig.Incoming) []byte {
		return ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{Incoming: m}})
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("{"), "is not a valid configuration"},
		{"trailing data", []byte(`{"tls":{}} {}`), "data after the JSON object"},
		{"no tls object", []byte(`{}`), `no "tls" object`},
		{"null", []byte(`null`), `no "tls" object`},
		{"unknown field", []byte(`{"tls":{"Outgoing":{},"Sideways":{}}}`), `unknown field "Sideways"`},
		{"unknown entry field", []byte(`{"tls":{"Incoming":{"*:1":{"clientAuth":true,"verify":false}}}}`), `unknown field "verify"`},
		{"outgoing key without port", out(map[string]ttlsconfig.Endpoint{"db": own}), `outgoing rule "db": the key is not <addr>:<port>`},
		{"outgoing key without host", out(map[string]ttlsconfig.Endpoint{":5432": own}), `outgoing rule ":5432": the key has no host`},
		{"outgoing port zero", out(map[string]ttlsconfig.Endpoint{"db:0": own}), `outgoing rule "db:0": port "0" is not a number from 1 to 65535`},
		{"outgoing port too large", out(map[string]ttlsconfig.Endpoint{"db:65536": own}), `port "65536"`},
		{"outgoing port name", out(map[string]ttlsconfig.Endpoint{"db:postgres": own}), `port "postgres"`},
		{"outgoing signed port", out(map[string]ttlsconfig.Endpoint{"db:+5432": own}), `port "+5432"`},
		{"outgoing without CA", out(map[string]ttlsconfig.Endpoint{"db:5432": noCA}), `outgoing rule "db:5432": cacrt holds no PEM certificate`},
		{"outgoing key as CA", out(map[string]ttlsconfig.Endpoint{"db:5432": keyAsCA}), `outgoing rule "db:5432": cacrt holds a PEM block of type "PRIVATE KEY"`},
		{"outgoing CA with trailing data", out(map[string]ttlsconfig.Endpoint{"db:5432": trailingCA}), "not PEM after its certificates"},
		{"outgoing key of another certificate", out(map[string]ttlsconfig.Endpoint{"db:5432": mismatched}), `outgoing rule "db:5432": clicrt and clikey`},
		{"outgoing duplicates", out(map[string]ttlsconfig.Endpoint{"DB:5432": own, "db.:05432": own}), `outgoing rules "DB:5432" and "db.:05432" name the same endpoint`},
		{"outgoing IP duplicates", out(map[string]ttlsconfig.Endpoint{"[::1]:9": own, "[0:0::1]:9": own}), "name the same endpoint"},
		{"incoming with host", in(map[string]ttlsconfig.Incoming{"10.0.0.1:443": {Endpoint: own}}), `incoming rule "10.0.0.1:443": the key's host is "10.0.0.1"`},
		{"incoming without port", in(map[string]ttlsconfig.Incoming{"*": {Endpoint: own}}), `incoming rule "*": the key is not *:<port>`},
		{"incoming port zero", in(map[string]ttlsconfig.Incoming{"*:0": {Endpoint: own}}), `incoming rule "*:0": port "0"`},
		{"incoming client auth without CA", in(map[string]ttlsconfig.Incoming{"*:443": {Endpoint: noCA, ClientAuth: true}}), `incoming rule "*:443": cacrt holds no PEM certificate`},
		{"incoming bad key", in(map[string]ttlsconfig.Incoming{"*:443": {Endpoint: mismatched}}), `incoming rule "*:443": clicrt and clikey`},
		{"incoming duplicates", in(map[string]ttlsconfig.Incoming{"*:443": {Endpoint: own}, "*:0443": {Endpoint: own}}), `incoming rules "*:0443" and "*:443" name the same port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt, err := ParseTransparentTLS(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseTransparentTLS() = %v, want an error containing %q", err, tc.want)
			}
			if tt != nil {
				t.Fatal("ParseTransparentTLS returned rules and an error")
			}
			if !strings.Contains(err.Error(), EnvTransparentTLS) {
				t.Errorf("the error does not name %s: %v", EnvTransparentTLS, err)
			}
		})
	}

	// Without client authentication, an incoming rule needs no CA.
	if _, err := ParseTransparentTLS(in(map[string]ttlsconfig.Incoming{"*:443": {Endpoint: noCA}})); err != nil {
		t.Errorf("incoming rule without clientAuth and CA: %v", err)
	}
}

func TestTransparentTLSOutgoingMatch(t *testing.T) {
	own := ttlsMaterial(t, newTestPKI(t, "ttls"), "own")
	tt, err := ParseTransparentTLS(ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{
		Outgoing: map[string]ttlsconfig.Endpoint{
			"db.example:5432": own,
			"Cache.:6379":     own,
			"[::1]:9000":      own,
			"10.0.0.7:80":     own,
			"*:8443":          own,
			"api:8443":        own,
		},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		network, addr string
		rule, host    string // rule "" means plain
	}{
		{"tcp", "db.example:5432", "db.example:5432", "db.example"},
		{"tcp4", "DB.Example.:5432", "db.example:5432", "db.example"},
		{"tcp", "db.example:5433", "", ""},
		{"tcp", "other.example:5432", "", ""},
		{"udp", "db.example:5432", "", ""},
		{"unix", "db.example:5432", "", ""},
		{"tcp", "cache:6379", "Cache.:6379", "cache"},
		{"tcp6", "[::1]:9000", "[::1]:9000", "::1"},
		{"tcp", "[0:0:0:0:0:0:0:1]:9000", "[::1]:9000", "::1"},
		{"tcp", "[::ffff:10.0.0.7]:80", "10.0.0.7:80", "10.0.0.7"},
		{"tcp", "10.0.0.7:http", "10.0.0.7:80", "10.0.0.7"},
		{"tcp", "anyone:8443", "*:8443", "anyone"},
		{"tcp", "api:8443", "api:8443", "api"},
		{"tcp", "no-port", "", ""},
	}
	for _, tc := range tests {
		r, host, err := tt.outgoingFor(t.Context(), tc.network, tc.addr)
		if err != nil {
			t.Errorf("outgoingFor(%s, %s): %v", tc.network, tc.addr, err)
			continue
		}
		got := ""
		if r != nil {
			got = r.key
		}
		if got != tc.rule || host != tc.host {
			t.Errorf("outgoingFor(%s, %s) = rule %q, host %q; want %q, %q", tc.network, tc.addr, got, host, tc.rule, tc.host)
		}
	}
	if _, _, err := tt.outgoingFor(t.Context(), "tcp", "db.example:no-such-service-marblemesh"); err == nil {
		t.Error("an unknown service name was not reported")
	}

	in, out := tt.Endpoints()
	if len(in) != 0 || strings.Join(out, " ") != "*:8443 10.0.0.7:80 Cache.:6379 [::1]:9000 api:8443 db.example:5432" {
		t.Errorf("Endpoints() = %q, %q", in, out)
	}
}

func TestTransparentTLSFromEnv(t *testing.T) {
	p := newTestPKI(t, "ttls")
	env := p.marbleEnv(t, "own")

	if _, err := TransparentTLSFromEnv(mapGetenv(nil)); err == nil || !strings.Contains(err.Error(), "activated by the Coordinator") {
		t.Errorf("outside a marble: err = %v", err)
	}
	tt, err := TransparentTLSFromEnv(mapGetenv(env))
	if err != nil {
		t.Fatalf("activated marble without TLS tags: %v", err)
	}
	if in, out := tt.Endpoints(); len(in)+len(out) != 0 {
		t.Errorf("no config gave rules %q %q", in, out)
	}

	env[EnvTransparentTLS] = string(ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{
		Incoming: map[string]ttlsconfig.Incoming{"*:443": {Endpoint: ttlsMaterial(t, p, "srv"), ClientAuth: true}},
	}}))
	tt, err = TransparentTLSFromEnv(mapGetenv(env))
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := tt.Endpoints(); len(in) != 1 || in[0] != "*:443" {
		t.Errorf("incoming = %q", in)
	}
	env[EnvTransparentTLS] = `{"tls": {"Incoming": {"*:x": {}}}}`
	if _, err := TransparentTLSFromEnv(mapGetenv(env)); err == nil || !strings.Contains(err.Error(), `incoming rule "*:x"`) {
		t.Errorf("bad config: err = %v", err)
	}
}

// TestTransparentTLSLoopback runs the rules over real sockets: an incoming
// rule with client authentication, one without (another certificate, as
// with a Cert secret), and a port without a rule.
func TestTransparentTLSLoopback(t *testing.T) {
	p := newTestPKI(t, "ttls")
	server, client := ttlsMaterial(t, p, "server"), ttlsMaterial(t, p, "client")
	public := ttlsMaterial(t, newTestPKI(t, "public"), "public")
	stranger := ttlsMaterial(t, newTestPKI(t, "stranger"), "stranger")

	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	mtlsL, publicL, plainL := listen(), listen(), listen()
	port := func(l net.Listener) string { return strconv.Itoa(l.Addr().(*net.TCPAddr).Port) }

	srv, err := ParseTransparentTLS(ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{Incoming: map[string]ttlsconfig.Incoming{
		"*:" + port(mtlsL):   {Endpoint: server, ClientAuth: true},
		"*:" + port(publicL): {Endpoint: public},
	}}}))
	if err != nil {
		t.Fatal(err)
	}
	rules := func(e ttlsconfig.Endpoint) *TransparentTLS {
		tt, err := ParseTransparentTLS(ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{Outgoing: map[string]ttlsconfig.Endpoint{
			"localhost:" + port(mtlsL): e,
		}}}))
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	cli, strangerCli := rules(client), rules(stranger)

	// echo answers each connection with the peer certificate's CN, or
	// "plain" when the connection is not TLS.
	echo := func(l net.Listener) {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					answer := "plain"
					if tc, ok := c.(*tls.Conn); ok {
						if err := tc.HandshakeContext(context.Background()); err != nil {
							return
						}
						answer = "tls"
						if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
							answer += " " + pc[0].Subject.CommonName
						}
					}
					_, _ = c.Write([]byte(answer))
				}()
			}
		}()
	}
	for _, l := range []net.Listener{mtlsL, publicL, plainL} {
		echo(srv.WrapListener(l))
	}
	read := func(c net.Conn) string {
		defer c.Close()
		b := make([]byte, 64)
		n, _ := c.Read(b)
		return string(b[:n])
	}

	// The client's rule makes the connection mTLS with its certificate.
	c, err := cli.DialContext(t.Context(), "tcp", "localhost:"+port(mtlsL))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*tls.Conn); !ok {
		t.Fatal("DialContext with a rule did not return a TLS connection")
	}
	if got := read(c); got != "tls client" {
		t.Errorf("mTLS port answered %q, want the client's certificate", got)
	}

	// 127.0.0.1 is not the address in the rule: plain, and refused by the
	// TLS port.
	c, err = cli.DialContext(t.Context(), "tcp", "127.0.0.1:"+port(mtlsL))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*tls.Conn); ok {
		t.Fatal("an address without a rule was dialled with TLS")
	}
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := read(c); got != "" {
		t.Errorf("a plain client got %q from the TLS port", got)
	}

	// A TLS client without a certificate is refused where clientAuth is set.
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port(mtlsL), &tls.Config{RootCAs: cli.outgoing["localhost:"+port(mtlsL)].roots, ServerName: "localhost"})
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("TLS client without certificate: %v, want a refusal", err)
	}

	// A marble of another mesh trusts another root: its handshake fails
	// and the error names the rule.
	_, err = strangerCli.DialContext(t.Context(), "tcp", "localhost:"+port(mtlsL))
	var unknown x509.UnknownAuthorityError
	if err == nil || !strings.Contains(err.Error(), `outgoing rule "localhost:`+port(mtlsL)+`"`) || !errors.As(err, &unknown) {
		t.Errorf("client of another mesh: err = %v", err)
	}

	// The port without clientAuth presents its own certificate and asks
	// for none.
	conn, err = tls.Dial("tcp", "127.0.0.1:"+port(publicL), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspects the certificate below
	if err != nil {
		t.Fatal(err)
	}
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "public" {
		t.Errorf("public port presented %q", cn)
	}
	if got := read(conn); got != "tls" {
		t.Errorf("public port answered %q", got)
	}

	// A port without a rule stays plain.
	c, err = cli.DialContext(t.Context(), "tcp", "127.0.0.1:"+port(plainL))
	if err != nil {
		t.Fatal(err)
	}
	if got := read(c); got != "plain" {
		t.Errorf("port without rule answered %q", got)
	}
}

// FuzzParseTransparentTLS feeds arbitrary values of MARBLE_TTLS_CONFIG to
// the parser: it must not panic, must return either rules or an error,
// and every rule it accepts must be found again by its own key.
func FuzzParseTransparentTLS(f *testing.F) {
	p := newTestPKI(f, "fuzz")
	own := ttlsMaterial(f, p, "own")
	f.Add(ttlsJSON(f, ttlsconfig.Document{TLS: &ttlsconfig.Rules{
		Outgoing: map[string]ttlsconfig.Endpoint{"db:5432": own, "[::1]:9000": own, "*:80": own},
		Incoming: map[string]ttlsconfig.Incoming{"*:8080": {Endpoint: own, ClientAuth: true}, "*:443": {Endpoint: own}},
	}}))
	f.Add([]byte(`{"tls":{"Outgoing":{},"Incoming":{}}}`))
	f.Add([]byte(`{"tls":{"Incoming":{"*:1":{"cacrt":"","clicrt":"x","clikey":"y","clientAuth":true}}}}`))
	f.Add([]byte(`{"tls":{"Outgoing":{"a:b:c":{}}}}`))
	f.Add([]byte(`{"TLS":null}`))
	f.Add([]byte(`[]`))

	f.Fuzz(func(t *testing.T, data []byte) {
		tt, err := ParseTransparentTLS(data)
		if err != nil {
			if tt != nil {
				t.Fatal("rules and an error")
			}
			if !strings.Contains(err.Error(), EnvTransparentTLS) {
				t.Fatalf("the error does not name %s: %v", EnvTransparentTLS, err)
			}
			return
		}
		in, out := tt.Endpoints()
		for _, key := range out {
			host, port, err := net.SplitHostPort(key)
			if err != nil {
				t.Fatalf("accepted outgoing key %q: %v", key, err)
			}
			if host == "*" {
				host = "any.example"
			}
			r, _, err := tt.outgoingFor(t.Context(), "tcp", net.JoinHostPort(host, port))
			if err != nil || r == nil {
				t.Fatalf("outgoing rule %q does not match its own address: %v", key, err)
			}
		}
		for _, key := range in {
			_, port, _ := net.SplitHostPort(key)
			n, err := strconv.Atoi(port)
			if err != nil {
				t.Fatalf("accepted incoming key %q", key)
			}
			if _, ok := tt.incoming[n]; !ok {
				t.Fatalf("incoming rule %q is not found by its port", key)
			}
		}
	})
}

// TestHTTPTransportHTTPSWithoutRule: an https:// request to an address
// without a rule is ordinary TLS with the transport's TLSClientConfig.
func TestHTTPTransportHTTPSWithoutRule(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("outside"))
	}))
	defer srv.Close()
	own := ttlsMaterial(t, newTestPKI(t, "ttls"), "own")
	tt, err := ParseTransparentTLS(ttlsJSON(t, ttlsconfig.Document{TLS: &ttlsconfig.Rules{
		Outgoing: map[string]ttlsconfig.Endpoint{"db:5432": own},
	}}))
	if err != nil {
		t.Fatal(err)
	}

	tr := tt.HTTPTransport()
	if tr.Proxy != nil {
		t.Fatal("the transport uses a proxy, which would bypass the rules")
	}
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server outside the system roots was accepted: %v", err)
	}
	tr = tt.HTTPTransport()
	tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
	resp, err = (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("with TLSClientConfig trusting the server: %v", err)
	}
	defer resp.Body.Close()
	if resp.TLS == nil {
		t.Fatal("the answer did not come over TLS")
	}
}
