package manifest

import (
	"errors"
	"fmt"
)

// CheckWithValues dry-runs every marble's templates and transparent-TLS
// configuration like Check does, but with values in place of the dummy
// values of the secrets it names. The Coordinator calls it before it
// stores user-defined secrets, whose real values may not fit the
// templates that use them: a certificate uploaded without its private key,
// or a plain secret with a NUL byte that a template puts into Env. Secrets
// not in values get dummy values, as in Check. All problems are reported
// together, each under its marble's path.
func (m *Manifest) CheckWithValues(values map[string]Secret) error {
	compiled, err := m.Compile()
	if err != nil {
		return err
	}
	needed := make(map[string]Secret)
	for _, c := range compiled {
		names, all := c.SecretNames()
		if all {
			needed = m.Secrets
			break
		}
		for _, n := range names {
			if def, ok := m.Secrets[n]; ok {
				needed[n] = def
			}
		}
	}
	data, err := dummyTemplateData(needed)
	if err != nil {
		return fmt.Errorf("preparing the template dry run: %w", err)
	}
	for name, v := range values {
		if _, ok := m.Secrets[name]; ok {
			data.Secrets[name] = v
		}
	}
	reserved := data.MarbleRun.MarbleCert
	rootPEM := string(pemBlock("CERTIFICATE", reserved.Cert.Raw))
	keyPEM := string(pemBlock("PRIVATE KEY", reserved.Private))
	var errs []error
	for _, name := range sortedKeys(compiled) {
		prefix := fmt.Sprintf("Marbles[%q]", name)
		if _, _, err := compiled[name].Render(data); err != nil {
			errs = append(errs, fmt.Errorf("%s.Parameters: %w", prefix, err))
		}
		if _, err := m.TTLSConfig(name, rootPEM, rootPEM, keyPEM, data.Secrets); err != nil {
			errs = append(errs, fmt.Errorf("%s.TLS: %w", prefix, err))
		}
	}
	return errors.Join(errs...)
}
