package version_test

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/version"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// TestBinariesReportBuildInfo builds every command with a plain go build
// (no -ldflags) and checks that each reports the version and commit the go
// command recorded in it.
func TestBinariesReportBuildInfo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the four commands")
	}
	dir := testsupport.GoBuildWithVCS(t,
		"github.com/marblemesh/marblemesh/cmd/coordinator",
		"github.com/marblemesh/marblemesh/cmd/marble-injector",
		"github.com/marblemesh/marblemesh/cmd/marblerun",
		"github.com/marblemesh/marblemesh/cmd/premain")
	for _, tc := range []struct {
		name string
		args []string
		want func(version.Info) string
	}{
		{"coordinator", []string{"--version"}, func(v version.Info) string { return "coordinator " + v.String() + "\n" }},
		{"marble-injector", []string{"--version"}, func(v version.Info) string { return "marble-injector " + v.String() + "\n" }},
		{"premain", []string{"--version"}, func(v version.Info) string { return "premain " + v.String() + "\n" }},
		{"marblerun", []string{"version"}, func(v version.Info) string {
			s := "CLI version: " + v.Version + "\nCommit: " + v.Commit + "\n"
			if v.Modified {
				s += "Built from a working tree with uncommitted changes\n"
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(dir, tc.name)
			bi := testsupport.RecordedBuildInfo(t, bin)
			want := version.Resolve("", "", func() (*debug.BuildInfo, bool) { return bi, true })
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && want.Commit != s.Value {
					t.Fatalf("the recorded revision %s is not the commit %s", s.Value, want.Commit)
				}
			}
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", tc.name, strings.Join(tc.args, " "), err, out)
			}
			if string(out) != tc.want(want) {
				t.Fatalf("%s %s printed\n%q\nwant\n%q", tc.name, strings.Join(tc.args, " "), out, tc.want(want))
			}
		})
	}
}

// TestLinkTimeVersionWins builds premain with the version and commit set
// at link time, as make and hack/image do, and checks that they are
// reported instead of the build information.
func TestLinkTimeVersionWins(t *testing.T) {
	if testing.Short() {
		t.Skip("builds premain")
	}
	tool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	bin := filepath.Join(t.TempDir(), "premain")
	const pkg = "github.com/marblemesh/marblemesh/internal/version"
	build := exec.Command(tool, "build", "-buildvcs=auto", "-o", bin,
		"-ldflags", "-X "+pkg+".Version=v9.8.7-test -X "+pkg+".Commit=0123abc",
		"github.com/marblemesh/marblemesh/cmd/premain")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || string(out) != "premain v9.8.7-test (commit 0123abc)\n" {
		t.Fatalf("premain --version: %v\n%q", err, out)
	}
}
