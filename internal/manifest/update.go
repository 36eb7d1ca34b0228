package manifest

import (
	"errors"
	"fmt"
	"maps"
)

// IsPackageUpdate reports whether m is a package update: it sets Packages
// and nothing else.
func (m *Manifest) IsPackageUpdate() bool {
	cfg := m.Config
	configEmpty := cfg.SealMode == "" && len(cfg.FeatureGates) == 0 && cfg.UpdateThreshold == 0 &&
		cfg.RecoveryThreshold == 0 && !cfg.RotateRootSecret
	return len(m.Packages) > 0 && len(m.Infrastructures) == 0 && len(m.Marbles) == 0 &&
		len(m.Users) == 0 && len(m.Secrets) == 0 && len(m.RecoveryKeys) == 0 &&
		len(m.Roles) == 0 && len(m.TLS) == 0 && configEmpty
}

// CheckPackageUpdate validates update as a package update of current: every
// listed package exists in current, sets SecurityVersion and nothing else,
// and does not lower it. A package identified by UniqueID has no security
// version to raise. All problems are reported at once.
func CheckPackageUpdate(current *Manifest, update *Manifest) error {
	if !update.IsPackageUpdate() {
		return errors.New("a package update must set Packages and nothing else")
	}
	var errs []*FieldError
	fail := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
	}
	for _, name := range sortedKeys(update.Packages) {
		pkg := update.Packages[name]
		path := fmt.Sprintf("Packages[%q]", name)
		cur, ok := current.Packages[name]
		if !ok {
			fail(path, "package is not defined in the current manifest")
			continue
		}
		var other []string
		if pkg.Debug {
			other = append(other, "Debug")
		}
		if pkg.UniqueID != "" {
			other = append(other, "UniqueID")
		}
		if pkg.SignerID != "" {
			other = append(other, "SignerID")
		}
		if pkg.ProductID != nil {
			other = append(other, "ProductID")
		}
		if len(pkg.AcceptedTCBStatuses) > 0 {
			other = append(other, "AcceptedTCBStatuses")
		}
		if len(pkg.AcceptedAdvisories) > 0 {
			other = append(other, "AcceptedAdvisories")
		}
		for _, field := range other {
			fail(path, "a package update may only set SecurityVersion, not %s", field)
		}
		switch {
		case pkg.SecurityVersion == nil:
			fail(path, "SecurityVersion is not set")
		case cur.UniqueID != "":
			fail(path, "the package is identified by UniqueID and has no SecurityVersion to update")
		case cur.SecurityVersion != nil && *pkg.SecurityVersion < *cur.SecurityVersion:
			fail(path, "SecurityVersion %d is lower than the current %d", *pkg.SecurityVersion, *cur.SecurityVersion)
		}
	}
	return joinSorted(errs)
}

// ApplyPackageUpdate checks update against m (see CheckPackageUpdate) and
// returns a copy of m with the new security versions. m is not modified;
// sections other than Packages are shared with it.
func (m *Manifest) ApplyPackageUpdate(update *Manifest) (*Manifest, error) {
	if err := CheckPackageUpdate(m, update); err != nil {
		return nil, err
	}
	out := *m
	out.Packages = maps.Clone(m.Packages)
	for name, pkg := range update.Packages {
		p := out.Packages[name]
		svn := *pkg.SecurityVersion
		p.SecurityVersion = &svn
		out.Packages[name] = p
	}
	return &out, nil
}
