package manifest

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// FieldError is a problem found at Path in the manifest, for example
// `Marbles["backend"]` or `Config.SealMode`.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// under returns e with prefix prepended to its path.
func (e *FieldError) under(prefix string) *FieldError {
	switch {
	case e.Path == "":
		return &FieldError{Path: prefix, Err: e.Err}
	case strings.HasPrefix(e.Path, "["):
		return &FieldError{Path: prefix + e.Path, Err: e.Err}
	}
	return &FieldError{Path: prefix + "." + e.Path, Err: e.Err}
}

// checker collects the problems of one manifest.
type checker struct {
	m     *Manifest
	errs  []*FieldError
	warns []*FieldError
}

func (c *checker) fail(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

func (c *checker) warn(path, format string, args ...any) {
	c.warns = append(c.warns, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// Check validates the manifest and reports every problem at once, sorted,
// each as a *FieldError naming its path. It checks packages, marbles, TLS
// tags, users, roles, secrets, recovery keys and configuration, and
// dry-runs every marble's templates with dummy secret values.
func (m *Manifest) Check() error {
	c := &checker{m: m}
	c.checkPackages()
	c.checkMarbles()
	c.checkTLS()
	c.checkUsers()
	c.checkRoles()
	c.checkSecrets()
	c.checkRecoveryKeys()
	c.checkConfig()
	c.checkTemplates()
	return joinSorted(c.errs)
}

// Warnings returns, sorted, problems that Check tolerates: incomplete or
// mixed enclave identities of Debug packages, and product IDs or security
// versions that no enclave can have.
func (m *Manifest) Warnings() []string {
	c := &checker{m: m}
	c.checkPackages()
	out := make([]string, len(c.warns))
	for i, w := range c.warns {
		out[i] = w.Error()
	}
	sort.Strings(out)
	return out
}

// joinSorted joins errs ordered by message, or returns nil.
func joinSorted(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	joined := make([]error, len(errs))
	for i, e := range errs {
		joined[i] = e
	}
	return errors.Join(joined...)
}

func (c *checker) checkPackages() {
	if len(c.m.Packages) == 0 {
		c.fail("Packages", "at least one package must be defined")
	}
	for _, name := range sortedKeys(c.m.Packages) {
		p := c.m.Packages[name]
		path := fmt.Sprintf("Packages[%q]", name)
		for _, id := range []struct{ field, value string }{{"UniqueID", p.UniqueID}, {"SignerID", p.SignerID}} {
			if id.value == "" {
				continue
			}
			b, err := hex.DecodeString(id.value)
			switch {
			case err != nil:
				c.fail(path, "%s is not valid hex", id.field)
			case len(b) != 32:
				c.fail(path, "%s must be 32 bytes (64 hex digits), got %d bytes", id.field, len(b))
			}
		}
		if problem := identityProblem(p); problem != "" {
			if p.Debug {
				c.warn(path, "%s (tolerated because Debug is true)", problem)
			} else {
				c.fail(path, "%s", problem)
			}
		}
		if p.ProductID != nil && *p.ProductID > 0xffff {
			c.warn(path, "ProductID %d is larger than any enclave product ID (65535)", *p.ProductID)
		}
		if p.SecurityVersion != nil && *p.SecurityVersion > 0xffff {
			c.warn(path, "SecurityVersion %d is larger than any enclave security version (65535)", *p.SecurityVersion)
		}
	}
}

// identityProblem describes what is wrong with a package's enclave identity:
// it must be UniqueID alone, or SignerID, ProductID and SecurityVersion.
func identityProblem(p Package) string {
	var present, missing []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"SignerID", p.SignerID != ""}, {"ProductID", p.ProductID != nil}, {"SecurityVersion", p.SecurityVersion != nil}} {
		if f.set {
			present = append(present, f.name)
		} else {
			missing = append(missing, f.name)
		}
	}
	switch {
	case p.UniqueID != "" && len(present) > 0:
		return fmt.Sprintf("UniqueID must not be combined with %s", strings.Join(present, ", "))
	case p.UniqueID != "" || len(missing) == 0:
		return ""
	case len(present) == 0:
		return "no enclave identity: set UniqueID, or SignerID, ProductID and SecurityVersion"
	}
	return fmt.Sprintf("SignerID, ProductID and SecurityVersion must be set together (missing %s)", strings.Join(missing, ", "))
}

func (c *checker) checkMarbles() {
	if len(c.m.Marbles) == 0 {
		c.fail("Marbles", "at least one marble must be defined")
	}
	for _, name := range sortedKeys(c.m.Marbles) {
		mb := c.m.Marbles[name]
		path := fmt.Sprintf("Marbles[%q]", name)
		if mb.Package == "" {
			c.fail(path, "Package is not set")
		} else if _, ok := c.m.Packages[mb.Package]; !ok {
			c.fail(path, "package %q is not defined", mb.Package)
		}
		type incoming struct {
			tag               string
			cert              string
			disableClientAuth bool
		}
		ports := make(map[string]incoming)
		for i, tagName := range mb.TLS {
			tag, ok := c.m.TLS[tagName]
			if !ok {
				c.fail(fmt.Sprintf("%s.TLS[%d]", path, i), "TLS tag %q is not defined", tagName)
				continue
			}
			for _, e := range tag.Incoming {
				if prev, dup := ports[e.Port]; dup && (prev.cert != e.Cert || prev.disableClientAuth != e.DisableClientAuth) {
					c.fail(path, "TLS tags %q and %q configure incoming port %q differently", prev.tag, tagName, e.Port)
				} else if !dup {
					ports[e.Port] = incoming{tagName, e.Cert, e.DisableClientAuth}
				}
			}
		}
		for key := range mb.Parameters.Files {
			if key == "" {
				c.fail(path+".Parameters.Files", "a file path is empty")
			}
		}
		for key := range mb.Parameters.Env {
			if key == "" || strings.ContainsAny(key, "=\x00") {
				c.fail(path+".Parameters."+entryPath("Env", key), "an environment variable name must be non-empty and contain neither '=' nor NUL")
			}
		}
	}
}

func (c *checker) checkTLS() {
	for _, name := range sortedKeys(c.m.TLS) {
		tag := c.m.TLS[name]
		for i, e := range tag.Incoming {
			path := fmt.Sprintf("TLS[%q].Incoming[%d]", name, i)
			if e.Port == "" {
				c.fail(path, "Port is required")
			}
			if e.Cert == "" {
				if e.DisableClientAuth {
					c.fail(path, "DisableClientAuth requires Cert")
				}
				continue
			}
			if s, ok := c.m.Secrets[e.Cert]; !ok {
				c.fail(path, "Cert names secret %q, which is not defined", e.Cert)
			} else if !IsCertificateType(s.Type) {
				c.fail(path, "Cert names secret %q of type %q, which is not a certificate", e.Cert, s.Type)
			}
			if !e.DisableClientAuth {
				c.fail(path, "DisableClientAuth must be true when Cert is set")
			}
		}
		for i, e := range tag.Outgoing {
			path := fmt.Sprintf("TLS[%q].Outgoing[%d]", name, i)
			if e.Addr == "" {
				c.fail(path, "Addr is required")
			}
			if e.Port == "" {
				c.fail(path, "Port is required")
			}
		}
	}
}

func (c *checker) checkUsers() {
	owner := make(map[string]string) // certificate DER → user
	for _, name := range sortedKeys(c.m.Users) {
		u := c.m.Users[name]
		path := fmt.Sprintf("Users[%q]", name)
		if cert, err := u.ParseCertificate(); err != nil {
			c.fail(path, "%w", err)
		} else if other, dup := owner[string(cert.Raw)]; dup {
			c.fail(path, "certificate is already used by user %q", other)
		} else {
			owner[string(cert.Raw)] = name
		}
		for i, role := range u.Roles {
			if _, ok := c.m.Roles[role]; !ok {
				c.fail(fmt.Sprintf("%s.Roles[%d]", path, i), "role %q is not defined", role)
			}
		}
	}
}

func (c *checker) checkRoles() {
	for _, name := range sortedKeys(c.m.Roles) {
		r := c.m.Roles[name]
		path := fmt.Sprintf("Roles[%q]", name)
		resourceType, ok := canonical(r.ResourceType, ResourcePackages, ResourceSecrets, ResourceManifest)
		if !ok {
			c.fail(path, "unknown ResourceType %q (want Packages, Secrets or Manifest)", r.ResourceType)
			continue
		}
		var allowed []string
		switch resourceType {
		case ResourcePackages:
			allowed = []string{ActionUpdateSecurityVersion}
			for i, res := range r.ResourceNames {
				if _, ok := c.m.Packages[res]; !ok {
					c.fail(fmt.Sprintf("%s.ResourceNames[%d]", path, i), "package %q is not defined", res)
				}
			}
		case ResourceSecrets:
			allowed = []string{ActionReadSecret, ActionWriteSecret}
			c.checkSecretRole(path, r)
		case ResourceManifest:
			allowed = []string{ActionUpdateManifest}
			if len(r.ResourceNames) > 0 {
				c.fail(path, "a Manifest role must not list ResourceNames")
			}
		}
		for i, action := range r.Actions {
			if _, ok := canonical(action, allowed...); !ok {
				c.fail(fmt.Sprintf("%s.Actions[%d]", path, i), "action %q is not allowed on %s (want %s)", action, resourceType, strings.Join(allowed, " or "))
			}
		}
	}
}

// checkSecretRole checks the secrets a Secrets role names: they must exist,
// WriteSecret needs user-defined secrets and ReadSecret cannot reach
// per-marble secrets.
func (c *checker) checkSecretRole(path string, r Role) {
	hasAction := func(action string) bool {
		return slices.ContainsFunc(r.Actions, func(a string) bool { return strings.EqualFold(a, action) })
	}
	write, read := hasAction(ActionWriteSecret), hasAction(ActionReadSecret)
	for i, res := range r.ResourceNames {
		resPath := fmt.Sprintf("%s.ResourceNames[%d]", path, i)
		s, ok := c.m.Secrets[res]
		if !ok {
			c.fail(resPath, "secret %q is not defined", res)
			continue
		}
		if write && !s.UserDefined {
			c.fail(resPath, "WriteSecret is only allowed on user-defined secrets, and %q is not one", res)
		}
		if read && !s.Shared && !s.UserDefined {
			c.fail(resPath, "ReadSecret is not allowed on %q, which is derived per marble", res)
		}
	}
}

func (c *checker) checkSecrets() {
	for _, name := range sortedKeys(c.m.Secrets) {
		s := c.m.Secrets[name]
		path := fmt.Sprintf("Secrets[%q]", name)
		var sizeErr error
		switch s.Type {
		case SecretTypeSymmetricKey:
			sizeErr = checkSymmetricSize(s.Size)
		case SecretTypeCertRSA:
			if s.Size != 0 || !s.UserDefined {
				sizeErr = checkRSASize(s.Size)
			}
		case SecretTypeCertECDSA:
			if s.Size != 0 || !s.UserDefined {
				_, sizeErr = curveForSize(s.Size)
			}
		case SecretTypeCertED25519:
			if s.Size != 0 {
				sizeErr = fmt.Errorf("cert-ed25519 Size must be 0, got %d", s.Size)
			}
		case SecretTypePlain:
			if !s.UserDefined {
				c.fail(path, "plain secrets must be UserDefined")
			}
		case "":
			c.fail(path, "Type is not set")
		default:
			c.fail(path, "unknown Type %q (want symmetric-key, cert-rsa, cert-ecdsa, cert-ed25519 or plain)", s.Type)
		}
		if sizeErr != nil {
			c.fail(path, "%w", sizeErr)
		}
		if IsCertificateType(s.Type) && !s.Cert.NotAfter.IsZero() && s.ValidFor != 0 {
			c.fail(path, "Cert.NotAfter and ValidFor must not both be set")
		}
	}
}

func (c *checker) checkRecoveryKeys() {
	for _, name := range sortedKeys(c.m.RecoveryKeys) {
		if _, err := ParseRecoveryKey(c.m.RecoveryKeys[name]); err != nil {
			c.fail(fmt.Sprintf("RecoveryKeys[%q]", name), "%w", err)
		}
	}
}

// ParseRecoveryKey decodes a recovery key: a PEM "PUBLIC KEY" block holding
// a PKIX RSA public key.
func ParseRecoveryKey(pemText string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("recovery key is not PEM-encoded")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("recovery key PEM block has type %q, want PUBLIC KEY", block.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing recovery key: %w", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("recovery key is a %T, want an RSA public key", pub)
	}
	return rsaPub, nil
}

func (c *checker) checkConfig() {
	cfg := c.m.Config
	if _, ok := cfg.CanonicalSealMode(); !ok {
		c.fail("Config.SealMode", "unknown seal mode %q (want ProductKey, UniqueKey or Disabled)", cfg.SealMode)
	}
	for i, gate := range cfg.FeatureGates {
		name, ok := canonical(gate, FeatureSignQuoteEndpoint, FeatureMonotonicCounter, FeatureAzureHSMSealing)
		switch {
		case !ok:
			c.fail(fmt.Sprintf("Config.FeatureGates[%d]", i), "unknown feature gate %q", gate)
		case name == FeatureAzureHSMSealing:
			c.fail(fmt.Sprintf("Config.FeatureGates[%d]", i), "%s is not supported: this Coordinator does not implement Azure Managed HSM sealing; remove the gate (the state is sealed with the enclave's seal key, chosen by Config.SealMode, and RecoveryKeys let the owners recover it)", FeatureAzureHSMSealing)
		}
	}
	if updaters := len(c.m.UsersAllowed(ActionUpdateManifest, ResourceManifest, "")); cfg.UpdateThreshold > uint(updaters) {
		c.fail("Config.UpdateThreshold", "%d is more than the %d user(s) allowed to UpdateManifest", cfg.UpdateThreshold, updaters)
	}
	switch keys := len(c.m.RecoveryKeys); {
	case cfg.RecoveryThreshold == 1:
		c.fail("Config.RecoveryThreshold", "must be 0 (all keys) or at least 2")
	case cfg.RecoveryThreshold > uint(keys):
		c.fail("Config.RecoveryThreshold", "%d is more than the %d recovery key(s)", cfg.RecoveryThreshold, keys)
	}
}

// checkTemplates parses every marble's templates, checks the secrets and
// fields they refer to, and renders them with dummy values. Dummy values
// are made only for secrets some template may use.
func (c *checker) checkTemplates() {
	type dryRun struct {
		path   string
		entry  *compiledEntry
		isEnv  bool
		budget *renderBudget // the marble's: limits hold per marble
	}
	var runs []dryRun
	needed := make(map[string]bool)
	all := false
	for _, name := range sortedKeys(c.m.Marbles) {
		prefix := fmt.Sprintf("Marbles[%q].Parameters", name)
		compiled, problems := compileParameters(c.m.Marbles[name].Parameters)
		budget := &renderBudget{}
		for _, p := range problems {
			c.errs = append(c.errs, p.under(prefix))
		}
		for _, section := range []struct {
			label   string
			entries []compiledEntry
			isEnv   bool
		}{{"Files", compiled.files, false}, {"Env", compiled.env, true}} {
			for i := range section.entries {
				e := &section.entries[i]
				path := prefix + "." + entryPath(section.label, e.key)
				before := len(c.errs)
				for _, n := range sortedKeys(e.refs.names) {
					if _, ok := c.m.Secrets[n]; !ok {
						c.fail(path, "template refers to secret %q, which is not defined", n)
					}
					needed[n] = true
				}
				for _, p := range e.refs.paths {
					if err := checkDataPath(p); err != nil {
						c.fail(path, "%w", err)
					}
				}
				if len(c.errs) == before {
					runs = append(runs, dryRun{path, e, section.isEnv, budget})
					all = all || e.refs.all
				}
			}
		}
	}
	if len(runs) == 0 {
		return
	}
	defs := c.m.Secrets
	if !all {
		defs = make(map[string]Secret, len(needed))
		for n := range needed {
			if s, ok := c.m.Secrets[n]; ok {
				defs[n] = s
			}
		}
	}
	data, err := dummyTemplateData(defs)
	if err != nil {
		c.fail("Marbles", "preparing the template dry run: %w", err)
		return
	}
	for _, r := range runs {
		if r.budget.exceeded != nil {
			continue // the marble's budget is spent; its entry is named
		}
		if _, err := r.entry.render(data, r.isEnv, r.budget); err != nil {
			c.fail(r.path, "%w", err)
		}
	}
}
