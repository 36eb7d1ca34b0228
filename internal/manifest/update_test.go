package manifest

import (
	"slices"
	"strings"
	"testing"
)

func TestIsPackageUpdate(t *testing.T) {
	pkgs := map[string]Package{"backend": {SecurityVersion: ptr[uint](3)}}
	tests := []struct {
		name string
		m    Manifest
		want bool
	}{
		{"packages only", Manifest{Packages: pkgs}, true},
		{"empty sections", Manifest{Packages: pkgs, Marbles: map[string]Marble{}, Secrets: map[string]Secret{}}, true},
		{"nothing", Manifest{}, false},
		{"marbles", Manifest{Packages: pkgs, Marbles: map[string]Marble{"m": {}}}, false},
		{"infrastructures", Manifest{Packages: pkgs, Infrastructures: map[string]Infrastructure{"i": {}}}, false},
		{"users", Manifest{Packages: pkgs, Users: map[string]User{"u": {}}}, false},
		{"secrets", Manifest{Packages: pkgs, Secrets: map[string]Secret{"s": {}}}, false},
		{"recovery keys", Manifest{Packages: pkgs, RecoveryKeys: map[string]string{"k": ""}}, false},
		{"roles", Manifest{Packages: pkgs, Roles: map[string]Role{"r": {}}}, false},
		{"tls", Manifest{Packages: pkgs, TLS: map[string]TLSTag{"t": {}}}, false},
		{"seal mode", Manifest{Packages: pkgs, Config: Config{SealMode: "UniqueKey"}}, false},
		{"feature gates", Manifest{Packages: pkgs, Config: Config{FeatureGates: []string{"MonotonicCounter"}}}, false},
		{"update threshold", Manifest{Packages: pkgs, Config: Config{UpdateThreshold: 1}}, false},
		{"recovery threshold", Manifest{Packages: pkgs, Config: Config{RecoveryThreshold: 2}}, false},
		{"root rotation", Manifest{Packages: pkgs, Config: Config{RotateRootSecret: true}}, false},
	}
	for _, tt := range tests {
		if got := tt.m.IsPackageUpdate(); got != tt.want {
			t.Errorf("%s: IsPackageUpdate() = %v, want %v", tt.name, got, tt.want)
		}
	}
	m, err := Parse([]byte(`{"packages": {"backend": {"securityversion": 4}}}`))
	if err != nil || !m.IsPackageUpdate() {
		t.Errorf("parsed package update: %v, %v", m, err)
	}
}

func TestCheckPackageUpdate(t *testing.T) {
	current := &Manifest{Packages: map[string]Package{
		"backend":  {SignerID: testSignerID, ProductID: ptr[uint64](1), SecurityVersion: ptr[uint](5)},
		"frontend": {UniqueID: testUniqueID},
		"debug":    {Debug: true, SignerID: testSignerID},
	}}
	update := func(pkgs map[string]Package) *Manifest { return &Manifest{Packages: pkgs} }
	tests := []struct {
		name   string
		update *Manifest
		want   []string
	}{
		{"raise", update(map[string]Package{"backend": {SecurityVersion: ptr[uint](6)}}), nil},
		{"keep", update(map[string]Package{"backend": {SecurityVersion: ptr[uint](5)}}), nil},
		{"set on a package without one", update(map[string]Package{"debug": {SecurityVersion: ptr[uint](1)}}), nil},
		{"lower", update(map[string]Package{"backend": {SecurityVersion: ptr[uint](4)}}),
			[]string{`Packages["backend"]: SecurityVersion 4 is lower than the current 5`}},
		{"unknown package", update(map[string]Package{"ghost": {SecurityVersion: ptr[uint](1)}}),
			[]string{`Packages["ghost"]: package is not defined in the current manifest`}},
		{"missing version", update(map[string]Package{"backend": {}}),
			[]string{`Packages["backend"]: SecurityVersion is not set`}},
		{"UniqueID package", update(map[string]Package{"frontend": {SecurityVersion: ptr[uint](1)}}),
			[]string{`Packages["frontend"]: the package is identified by UniqueID and has no SecurityVersion to update`}},
		{"other fields", update(map[string]Package{"backend": {
			Debug: true, UniqueID: testUniqueID, SignerID: testSignerID, ProductID: ptr[uint64](1),
			AcceptedTCBStatuses: []string{"OutOfDate"}, AcceptedAdvisories: []string{"INTEL-SA-1"}, SecurityVersion: ptr[uint](9),
		}}), []string{
			`Packages["backend"]: a package update may only set SecurityVersion, not AcceptedAdvisories`,
			`Packages["backend"]: a package update may only set SecurityVersion, not AcceptedTCBStatuses`,
			`Packages["backend"]: a package update may only set SecurityVersion, not Debug`,
			`Packages["backend"]: a package update may only set SecurityVersion, not ProductID`,
			`Packages["backend"]: a package update may only set SecurityVersion, not SignerID`,
			`Packages["backend"]: a package update may only set SecurityVersion, not UniqueID`,
		}},
		{"several packages", update(map[string]Package{"backend": {SecurityVersion: ptr[uint](1)}, "ghost": {}}), []string{
			`Packages["backend"]: SecurityVersion 1 is lower than the current 5`,
			`Packages["ghost"]: package is not defined in the current manifest`,
		}},
		{"not a package update", &Manifest{Packages: map[string]Package{"backend": {SecurityVersion: ptr[uint](6)}}, Marbles: map[string]Marble{"m": {}}},
			[]string{"a package update must set Packages and nothing else"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPackageUpdate(current, tt.update)
			if got := errorLines(err); !slices.Equal(got, tt.want) {
				t.Errorf("CheckPackageUpdate() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestApplyPackageUpdate(t *testing.T) {
	f := newFixtures(t)
	current := validManifest(f)
	updated, err := current.ApplyPackageUpdate(&Manifest{Packages: map[string]Package{"backend": {SecurityVersion: ptr[uint](7)}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := *updated.Packages["backend"].SecurityVersion; got != 7 {
		t.Errorf("updated SecurityVersion = %d", got)
	}
	if got := *current.Packages["backend"].SecurityVersion; got != 2 {
		t.Errorf("current manifest was modified: SecurityVersion = %d", got)
	}
	if updated.Packages["backend"].SignerID != testSignerID || updated.Packages["frontend"].UniqueID != testUniqueID {
		t.Error("other package fields were lost")
	}
	if err := updated.Check(); err != nil {
		t.Errorf("updated manifest fails Check: %v", err)
	}
	if _, err := current.ApplyPackageUpdate(&Manifest{Packages: map[string]Package{"backend": {SecurityVersion: ptr[uint](1)}}}); err == nil {
		t.Error("a lowering update was applied")
	}
}
