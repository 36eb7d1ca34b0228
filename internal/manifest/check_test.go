package manifest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheckValid(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	if err := m.Check(); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
}

func TestCheckAccepts(t *testing.T) {
	f := newFixtures(t)
	tests := map[string]func(m *Manifest){
		"case-insensitive names": func(m *Manifest) {
			m.Config.SealMode = "uniquekey"
			m.Config.FeatureGates = []string{"monotoniccounter", "SIGNQUOTEENDPOINT"}
			m.Roles["reader"] = Role{ResourceType: "secrets", ResourceNames: []string{"sharedKey"}, Actions: []string{"readsecret"}}
			m.Roles["updater"] = Role{ResourceType: "MANIFEST", Actions: []string{"updatemanifest"}}
		},
		"seal modes": func(m *Manifest) { m.Config.SealMode = "Disabled" },
		"default seal mode": func(m *Manifest) {
			m.Config.SealMode = ""
		},
		"thresholds zero": func(m *Manifest) {
			m.Config.UpdateThreshold, m.Config.RecoveryThreshold = 0, 0
		},
		"no recovery keys": func(m *Manifest) {
			m.RecoveryKeys, m.Config.RecoveryThreshold = nil, 0
		},
		"debug package without identity": func(m *Manifest) {
			m.Packages["frontend"] = Package{Debug: true}
		},
		"user-defined certificates need no size": func(m *Manifest) {
			m.Secrets["upload"] = Secret{Type: SecretTypeCertECDSA, UserDefined: true}
			m.Secrets["uploadRSA"] = Secret{Type: SecretTypeCertRSA, UserDefined: true}
		},
		"certificate template NotAfter": func(m *Manifest) {
			s := m.Secrets["frontendCert"]
			s.ValidFor = 0
			s.Cert.NotAfter = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			m.Secrets["frontendCert"] = s
		},
		"argv is not templated": func(m *Manifest) {
			mb := m.Marbles["backend"]
			mb.Parameters.Argv = []string{"{{ .Secrets.nope }}", "{{"}
			m.Marbles["backend"] = mb
		},
		"template with define and range": func(m *Manifest) {
			m.Marbles["backend"].Parameters.Files["/all"] = File{Data: `{{define "k"}}{{hex .}}{{end}}{{range $n, $s := .Secrets}}{{if eq $s.Type "symmetric-key"}}{{$n}}={{template "k" $s}}{{end}}{{end}}`}
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			m := validManifest(f)
			mutate(m)
			if err := m.Check(); err != nil {
				t.Fatalf("Check() = %v", err)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	f := newFixtures(t)
	setMarble := func(m *Manifest, name string, change func(*Marble)) {
		mb := m.Marbles[name]
		change(&mb)
		m.Marbles[name] = mb
	}
	setFile := func(m *Manifest, marble, section, key, data string) {
		setMarble(m, marble, func(mb *Marble) {
			if section == "Env" {
				mb.Parameters.Env[key] = File{Data: data}
			} else {
				mb.Parameters.Files[key] = File{Data: data}
			}
		})
	}
	tests := []struct {
		name   string
		mutate func(m *Manifest)
		want   []string
	}{
		{"no packages", func(m *Manifest) { m.Packages = nil }, []string{
			"Packages: at least one package must be defined",
			`Marbles["backend"]: package "backend" is not defined`,
		}},
		{"no marbles", func(m *Manifest) { m.Marbles = nil }, []string{"Marbles: at least one marble must be defined"}},
		{"undefined package", func(m *Manifest) { setMarble(m, "backend", func(mb *Marble) { mb.Package = "x" }) },
			[]string{`Marbles["backend"]: package "x" is not defined`}},
		{"empty package", func(m *Manifest) { setMarble(m, "backend", func(mb *Marble) { mb.Package = "" }) },
			[]string{`Marbles["backend"]: Package is not set`}},
		{"undefined TLS tag", func(m *Manifest) { setMarble(m, "backend", func(mb *Marble) { mb.TLS = []string{"web", "nope"} }) },
			[]string{`Marbles["backend"].TLS[1]: TLS tag "nope" is not defined`}},
		{"UniqueID with SignerID", func(m *Manifest) {
			m.Packages["frontend"] = Package{UniqueID: testUniqueID, SignerID: testSignerID}
		}, []string{`Packages["frontend"]: UniqueID must not be combined with SignerID`}},
		{"UniqueID with SecurityVersion", func(m *Manifest) {
			m.Packages["frontend"] = Package{UniqueID: testUniqueID, SecurityVersion: ptr[uint](1)}
		}, []string{`Packages["frontend"]: UniqueID must not be combined with SecurityVersion`}},
		{"signer missing ProductID", func(m *Manifest) {
			m.Packages["backend"] = Package{SignerID: testSignerID, SecurityVersion: ptr[uint](1)}
		}, []string{`Packages["backend"]: SignerID, ProductID and SecurityVersion must be set together (missing ProductID)`}},
		{"ProductID alone", func(m *Manifest) {
			m.Packages["backend"] = Package{ProductID: ptr[uint64](1)}
		}, []string{`Packages["backend"]: SignerID, ProductID and SecurityVersion must be set together (missing SignerID, SecurityVersion)`}},
		{"no identity", func(m *Manifest) { m.Packages["backend"] = Package{} },
			[]string{`Packages["backend"]: no enclave identity: set UniqueID, or SignerID, ProductID and SecurityVersion`}},
		{"UniqueID not hex", func(m *Manifest) { m.Packages["frontend"] = Package{UniqueID: "zz" + testUniqueID[2:]} },
			[]string{`Packages["frontend"]: UniqueID is not valid hex`}},
		{"SignerID too short", func(m *Manifest) {
			p := m.Packages["backend"]
			p.SignerID = "abcd"
			m.Packages["backend"] = p
		}, []string{`Packages["backend"]: SignerID must be 32 bytes (64 hex digits), got 2 bytes`}},
		{"bad hex even in debug", func(m *Manifest) { m.Packages["frontend"] = Package{Debug: true, UniqueID: "abc"} },
			[]string{`Packages["frontend"]: UniqueID is not valid hex`}},
		{"incoming without port", func(m *Manifest) { m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{}}} },
			[]string{`TLS["db"].Incoming[0]: Port is required`}},
		{"incoming cert undefined", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{Port: "1", Cert: "nope", DisableClientAuth: true}}}
		}, []string{`TLS["db"].Incoming[0]: Cert names secret "nope", which is not defined`}},
		{"incoming cert not a certificate", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{Port: "1", Cert: "sharedKey", DisableClientAuth: true}}}
		}, []string{`TLS["db"].Incoming[0]: Cert names secret "sharedKey" of type "symmetric-key", which is not a certificate`}},
		{"incoming cert with client auth", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{Port: "1", Cert: "frontendCert"}}}
		}, []string{`TLS["db"].Incoming[0]: DisableClientAuth must be true when Cert is set`}},
		{"DisableClientAuth without cert", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{Port: "1", DisableClientAuth: true}}}
		}, []string{`TLS["db"].Incoming[0]: DisableClientAuth requires Cert`}},
		{"outgoing incomplete", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Outgoing: []TLSEntry{{Port: "1"}, {Addr: "x"}}}
		}, []string{`TLS["db"].Outgoing[0]: Addr is required`, `TLS["db"].Outgoing[1]: Port is required`}},
		{"conflicting incoming ports", func(m *Manifest) {
			m.TLS["db"] = TLSTag{Incoming: []TLSEntry{{Port: "8443"}}}
		}, []string{`Marbles["backend"]: TLS tags "web" and "db" configure incoming port "8443" differently`}},
		{"user without certificate", func(m *Manifest) { m.Users["carol"] = User{} },
			[]string{`Users["carol"]: certificate is empty`}},
		{"user certificate not PEM", func(m *Manifest) { m.Users["carol"] = User{Certificate: "hello"} },
			[]string{`Users["carol"]: certificate is not PEM-encoded`}},
		{"user certificate wrong block", func(m *Manifest) { m.Users["carol"] = User{Certificate: f.recoveryA} },
			[]string{`Users["carol"]: certificate PEM block has type "PUBLIC KEY", want CERTIFICATE`}},
		{"user certificate garbage", func(m *Manifest) {
			m.Users["carol"] = User{Certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}
		}, []string{`Users["carol"]: parsing certificate:`}},
		{"user role undefined", func(m *Manifest) { m.Users["carol"] = User{Certificate: f.carol, Roles: []string{"reader", "ghost"}} },
			[]string{`Users["carol"].Roles[1]: role "ghost" is not defined`}},
		{"duplicate certificate", func(m *Manifest) { m.Users["carol"] = User{Certificate: f.alice} },
			[]string{`Users["carol"]: certificate is already used by user "alice"`}},
		{"unknown resource type", func(m *Manifest) { m.Roles["x"] = Role{ResourceType: "Marbles", Actions: []string{"ReadSecret"}} },
			[]string{`Roles["x"]: unknown ResourceType "Marbles" (want Packages, Secrets or Manifest)`}},
		{"package role undefined package", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Packages", ResourceNames: []string{"ghost"}, Actions: []string{"UpdateSecurityVersion"}}
		}, []string{`Roles["x"].ResourceNames[0]: package "ghost" is not defined`}},
		{"package role wrong action", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Packages", ResourceNames: []string{"backend"}, Actions: []string{"ReadSecret"}}
		}, []string{`Roles["x"].Actions[0]: action "ReadSecret" is not allowed on Packages (want UpdateSecurityVersion)`}},
		{"secret role undefined secret", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Secrets", ResourceNames: []string{"ghost"}, Actions: []string{"ReadSecret"}}
		}, []string{`Roles["x"].ResourceNames[0]: secret "ghost" is not defined`}},
		{"secret role wrong action", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Secrets", ResourceNames: []string{"dbKey"}, Actions: []string{"UpdateManifest"}}
		}, []string{`Roles["x"].Actions[0]: action "UpdateManifest" is not allowed on Secrets (want ReadSecret or WriteSecret)`}},
		{"write on generated secret", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Secrets", ResourceNames: []string{"sharedKey"}, Actions: []string{"writesecret"}}
		}, []string{`Roles["x"].ResourceNames[0]: WriteSecret is only allowed on user-defined secrets, and "sharedKey" is not one`}},
		{"read on per-marble secret", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Secrets", ResourceNames: []string{"sessionKey"}, Actions: []string{"ReadSecret"}}
		}, []string{`Roles["x"].ResourceNames[0]: ReadSecret is not allowed on "sessionKey", which is derived per marble`}},
		{"manifest role with names", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Manifest", ResourceNames: []string{"a"}, Actions: []string{"UpdateManifest"}}
		}, []string{`Roles["x"]: a Manifest role must not list ResourceNames`}},
		{"manifest role wrong action", func(m *Manifest) {
			m.Roles["x"] = Role{ResourceType: "Manifest", Actions: []string{"UpdateSecurityVersion"}}
		}, []string{`Roles["x"].Actions[0]: action "UpdateSecurityVersion" is not allowed on Manifest (want UpdateManifest)`}},
		{"unknown secret type", func(m *Manifest) { m.Secrets["x"] = Secret{Type: "cert-dsa"} },
			[]string{`Secrets["x"]: unknown Type "cert-dsa"`}},
		{"secret type case matters", func(m *Manifest) { m.Secrets["x"] = Secret{Type: "Symmetric-Key", Size: 128} },
			[]string{`Secrets["x"]: unknown Type "Symmetric-Key"`}},
		{"missing secret type", func(m *Manifest) { m.Secrets["x"] = Secret{} }, []string{`Secrets["x"]: Type is not set`}},
		{"symmetric size zero", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeSymmetricKey} },
			[]string{`Secrets["x"]: symmetric-key Size must be a positive multiple of 8 bits, got 0`}},
		{"symmetric size not byte aligned", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeSymmetricKey, Size: 12} },
			[]string{`Secrets["x"]: symmetric-key Size must be a positive multiple of 8 bits, got 12`}},
		{"user-defined symmetric needs size", func(m *Manifest) {
			m.Secrets["x"] = Secret{Type: SecretTypeSymmetricKey, UserDefined: true}
		}, []string{`Secrets["x"]: symmetric-key Size must be a positive multiple of 8 bits, got 0`}},
		{"symmetric size too large", func(m *Manifest) {
			m.Secrets["x"] = Secret{Type: SecretTypeSymmetricKey, Size: MaxSymmetricKeyBits + 8}
		}, []string{`Secrets["x"]: symmetric-key Size must be at most 65280 bits, got 65288`}},
		{"rsa too small", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeCertRSA, Size: 1024} },
			[]string{`Secrets["x"]: cert-rsa Size must be between 2048 and 8192 bits, got 1024`}},
		{"rsa without size", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeCertRSA} },
			[]string{`Secrets["x"]: cert-rsa Size must be between 2048 and 8192 bits, got 0`}},
		{"ecdsa odd curve", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeCertECDSA, Size: 255} },
			[]string{`Secrets["x"]: cert-ecdsa Size must be 224, 256, 384 or 521, got 255`}},
		{"ed25519 with size", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypeCertED25519, Size: 256} },
			[]string{`Secrets["x"]: cert-ed25519 Size must be 0, got 256`}},
		{"plain not user-defined", func(m *Manifest) { m.Secrets["x"] = Secret{Type: SecretTypePlain, Shared: true} },
			[]string{`Secrets["x"]: plain secrets must be UserDefined`}},
		{"NotAfter and ValidFor", func(m *Manifest) {
			s := m.Secrets["frontendCert"]
			s.Cert.NotAfter = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			m.Secrets["frontendCert"] = s
		}, []string{`Secrets["frontendCert"]: Cert.NotAfter and ValidFor must not both be set`}},
		{"update threshold too high", func(m *Manifest) { m.Config.UpdateThreshold = 3 },
			[]string{`Config.UpdateThreshold: 3 is more than the 2 user(s) allowed to UpdateManifest`}},
		{"recovery threshold one", func(m *Manifest) { m.Config.RecoveryThreshold = 1 },
			[]string{`Config.RecoveryThreshold: must be 0 (all keys) or at least 2`}},
		{"recovery threshold too high", func(m *Manifest) { m.Config.RecoveryThreshold = 3 },
			[]string{`Config.RecoveryThreshold: 3 is more than the 2 recovery key(s)`}},
		{"recovery key not PEM", func(m *Manifest) { m.RecoveryKeys["c"] = "nope" },
			[]string{`RecoveryKeys["c"]: recovery key is not PEM-encoded`}},
		{"recovery key not RSA", func(m *Manifest) { m.RecoveryKeys["c"] = f.ecdsaPub },
			[]string{`RecoveryKeys["c"]: recovery key is a *ecdsa.PublicKey, want an RSA public key`}},
		{"recovery key is a certificate", func(m *Manifest) { m.RecoveryKeys["c"] = f.carol },
			[]string{`RecoveryKeys["c"]: recovery key PEM block has type "CERTIFICATE", want PUBLIC KEY`}},
		{"unknown seal mode", func(m *Manifest) { m.Config.SealMode = "Sealed" },
			[]string{`Config.SealMode: unknown seal mode "Sealed" (want ProductKey, UniqueKey or Disabled)`}},
		{"unknown feature gate", func(m *Manifest) { m.Config.FeatureGates = []string{"SignQuoteEndpoint", "Teleport"} },
			[]string{`Config.FeatureGates[1]: unknown feature gate "Teleport"`}},
		{"Azure HSM sealing is not implemented", func(m *Manifest) { m.Config.FeatureGates = []string{"MonotonicCounter", "azurehsmsealing"} },
			[]string{`Config.FeatureGates[1]: AzureHSMSealing is not supported: this Coordinator does not implement Azure Managed HSM sealing; remove the gate (the state is sealed with the enclave's seal key, chosen by Config.SealMode, and RecoveryKeys let the owners recover it)`}},
		{"env NUL", func(m *Manifest) { setFile(m, "backend", "Env", "BAD", "a\x00b") },
			[]string{`Marbles["backend"].Parameters.Env["BAD"]: environment value contains a NUL byte`}},
		{"env NUL without templates", func(m *Manifest) {
			setMarble(m, "backend", func(mb *Marble) { mb.Parameters.Env["BAD"] = File{Data: "a\x00", NoTemplates: true} })
		}, []string{`Marbles["backend"].Parameters.Env["BAD"]: environment value contains a NUL byte`}},
		{"env name with equals", func(m *Manifest) { setFile(m, "backend", "Env", "A=B", "x") },
			[]string{`Marbles["backend"].Parameters.Env["A=B"]: an environment variable name must be non-empty and contain neither '=' nor NUL`}},
		{"empty file path", func(m *Manifest) { setFile(m, "backend", "Files", "", "x") },
			[]string{`Marbles["backend"].Parameters.Files: a file path is empty`}},
		{"template syntax", func(m *Manifest) { setFile(m, "backend", "Files", "/bad", "{{ hex .Secrets.dbKey ") },
			[]string{`Marbles["backend"].Parameters.Files["/bad"]: template: /bad:1: unclosed action`}},
		{"raw is not an env function", func(m *Manifest) { setFile(m, "backend", "Env", "RAW", "{{ raw .Secrets.dbKey }}") },
			[]string{`Marbles["backend"].Parameters.Env["RAW"]: template: RAW:1: function "raw" not defined`}},
		{"string is not a file function", func(m *Manifest) { setFile(m, "backend", "Files", "/s", "{{ string .Secrets.apiToken }}") },
			[]string{`Marbles["backend"].Parameters.Files["/s"]: template: /s:1: function "string" not defined`}},
		{"undefined secret", func(m *Manifest) { setFile(m, "backend", "Files", "/x", "{{ hex .Secrets.ghost }}") },
			[]string{`Marbles["backend"].Parameters.Files["/x"]: template refers to secret "ghost", which is not defined`}},
		{"undefined previous secret in untaken branch", func(m *Manifest) {
			setFile(m, "backend", "Env", "X", "{{ if false }}{{ hex .Previous.Secrets.ghost }}{{ end }}")
		}, []string{`Marbles["backend"].Parameters.Env["X"]: template refers to secret "ghost", which is not defined`}},
		{"removed reserved field", func(m *Manifest) { setFile(m, "backend", "Files", "/x", "{{ hex .MarbleRun.SealKey }}") },
			[]string{`Marbles["backend"].Parameters.Files["/x"]: template refers to .MarbleRun.SealKey, but .MarbleRun has no field SealKey`}},
		{"unknown secret field", func(m *Manifest) {
			setFile(m, "backend", "Files", "/x", "{{ with false }}{{ else }}{{ .Secrets.dbKey.Key }}{{ end }}")
		},
			[]string{`Marbles["backend"].Parameters.Files["/x"]: template refers to .Secrets.dbKey.Key, but .Secrets.dbKey has no field Key`}},
		{"field of a byte slice", func(m *Manifest) { setFile(m, "backend", "Files", "/x", "{{ $.Secrets.dbKey.Private.Bytes }}") },
			[]string{`Marbles["backend"].Parameters.Files["/x"]: template refers to .Secrets.dbKey.Private.Bytes, but .Secrets.dbKey.Private has no fields`}},
		{"unknown root field", func(m *Manifest) { setFile(m, "backend", "Files", "/x", "{{ .Root }}") },
			[]string{`Marbles["backend"].Parameters.Files["/x"]: template refers to .Root, but the template data has no field Root`}},
		{"dry run: string of a key", func(m *Manifest) { setFile(m, "backend", "Env", "K", "{{ string .Secrets.dbKey }}") },
			[]string{`Marbles["backend"].Parameters.Env["K"]: template: K:1:3: executing "K" at <string .Secrets.dbKey>: error calling string: string: argument must be a plain secret, got a "symmetric-key" secret`}},
		{"dry run: pem of a symmetric key", func(m *Manifest) { setFile(m, "backend", "Files", "/k", "{{ pem .Secrets.dbKey }}") },
			[]string{`error calling pem: pem: a "symmetric-key" secret has no PEM form; use hex or base64`}},
		{"dry run: pem of the root key", func(m *Manifest) { setFile(m, "backend", "Files", "/k", "{{ pem .MarbleRun.RootCA.Private }}") },
			[]string{`error calling pem: pem: the value is empty`}},
		{"dry run: wrong argument", func(m *Manifest) { setFile(m, "backend", "Files", "/k", "{{ hex .Secrets.dbKey.Size }}") },
			[]string{`error calling hex: hex: unsupported argument of type uint`}},
		{"dry run: range over a key", func(m *Manifest) {
			setFile(m, "backend", "Files", "/k", "{{ range .Secrets }}{{ .Cert.Subject.Nope }}{{ end }}")
		}, []string{`Marbles["backend"].Parameters.Files["/k"]: template: /k:1:28: executing "/k" at <.Cert.Subject.Nope>: can't evaluate field Nope`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest(f)
			tt.mutate(m)
			err := m.Check()
			if err == nil {
				t.Fatal("Check() = nil, want an error")
			}
			lines := errorLines(err)
			for _, want := range tt.want {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) || strings.Contains(l, want) }) {
					t.Errorf("Check() does not report %q; got:\n%v", want, err)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("Check() error is not a *FieldError")
			}
		})
	}
}

func TestCheckReportsAllProblemsSorted(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	m.Config.SealMode = "Nope"
	m.Secrets["bad"] = Secret{Type: SecretTypeSymmetricKey, Size: 7}
	m.Users["carol"] = User{Roles: []string{"ghost"}}
	mb := m.Marbles["backend"]
	mb.Package = "ghost"
	mb.Parameters.Env["E"] = File{Data: "{{ hex .Secrets.ghost }}"}
	m.Marbles["backend"] = mb
	m.Packages["frontend"] = Package{}

	err := m.Check()
	want := []string{
		`Config.SealMode: unknown seal mode "Nope" (want ProductKey, UniqueKey or Disabled)`,
		`Marbles["backend"].Parameters.Env["E"]: template refers to secret "ghost", which is not defined`,
		`Marbles["backend"]: package "ghost" is not defined`,
		`Packages["frontend"]: no enclave identity: set UniqueID, or SignerID, ProductID and SecurityVersion`,
		`Secrets["bad"]: symmetric-key Size must be a positive multiple of 8 bits, got 7`,
		`Users["carol"].Roles[0]: role "ghost" is not defined`,
		`Users["carol"]: certificate is empty`,
	}
	if got := errorLines(err); !slices.Equal(got, want) {
		t.Errorf("Check() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The same manifest always yields the same report.
	if again := m.Check(); again.Error() != err.Error() {
		t.Errorf("Check() is not deterministic")
	}
}

func TestWarnings(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	m.Packages["frontend"] = Package{Debug: true, UniqueID: testUniqueID, SignerID: testSignerID}
	m.Packages["backend"] = Package{Debug: true, ProductID: ptr[uint64](70000), SecurityVersion: ptr[uint](1 << 20), SignerID: testSignerID}
	m.Packages["third"] = Package{Debug: true}
	if err := m.Check(); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	want := []string{
		`Packages["backend"]: ProductID 70000 is larger than any enclave product ID (65535)`,
		`Packages["backend"]: SecurityVersion 1048576 is larger than any enclave security version (65535)`,
		`Packages["frontend"]: UniqueID must not be combined with SignerID (tolerated because Debug is true)`,
		`Packages["third"]: no enclave identity: set UniqueID, or SignerID, ProductID and SecurityVersion (tolerated because Debug is true)`,
	}
	if got := m.Warnings(); !slices.Equal(got, want) {
		t.Errorf("Warnings() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCheckRSADryRun(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	m.Secrets["rsa"] = Secret{Type: SecretTypeCertRSA, Size: 4096}
	m.Secrets["rsa2"] = Secret{Type: SecretTypeCertRSA, Size: 3072, Shared: true}
	m.Marbles["backend"].Parameters.Files["/rsa"] = File{Data: "{{ pem .Secrets.rsa.Cert }}{{ pem .Secrets.rsa.Private }}{{ pem .Secrets.rsa2 }}"}
	start := time.Now()
	if err := m.Check(); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	t.Logf("Check with RSA secrets took %v", time.Since(start))
}

func TestCheckLargeManifest(t *testing.T) {
	m := largeManifest(1000, 1000)
	start := time.Now()
	if err := m.Check(); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	t.Logf("Check of %d marbles and %d secrets took %v", len(m.Marbles), len(m.Secrets), time.Since(start))
}
