package version

import (
	"runtime/debug"
	"testing"
)

func buildInfo(mainVersion string, settings ...string) BuildInfoReader {
	return func() (*debug.BuildInfo, bool) {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/marblemesh/marblemesh", Version: mainVersion}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi, true
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	const rev = "9e4e425abcdef0123456789abcdef0123456789a"
	noInfo := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tc := range []struct {
		name                 string
		linkVersion, linkRev string
		read                 BuildInfoReader
		want                 Info
		wantString           string
	}{
		{
			name: "link-time values win", linkVersion: "v1.2.3", linkRev: "abc1234",
			read:       buildInfo("v0.0.0-20261203191816-9e4e425abcde", "vcs.revision", rev, "vcs.modified", "true"),
			want:       Info{Version: "v1.2.3", Commit: "abc1234"},
			wantString: "v1.2.3 (commit abc1234)",
		},
		{
			name:       "plain go build in a clean checkout",
			read:       buildInfo("v0.0.0-20261203191816-9e4e425abcde", "vcs", "git", "vcs.revision", rev, "vcs.modified", "false"),
			want:       Info{Version: "v0.0.0-20261203191816-9e4e425abcde", Commit: rev},
			wantString: "v0.0.0-20261203191816-9e4e425abcde (commit " + rev + ")",
		},
		{
			name:       "plain go build with uncommitted changes",
			read:       buildInfo("v0.0.0-20261203191816-9e4e425abcde+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			want:       Info{Version: "v0.0.0-20261203191816-9e4e425abcde+dirty", Commit: rev, Modified: true},
			wantString: "v0.0.0-20261203191816-9e4e425abcde+dirty (commit " + rev + ", modified)",
		},
		{
			name:       "go install of a tagged module",
			read:       buildInfo("v1.4.0"),
			want:       Info{Version: "v1.4.0", Commit: UnknownCommit},
			wantString: "v1.4.0 (commit unknown)",
		},
		{
			name:       "go run without VCS stamp",
			read:       buildInfo("(devel)", "-compiler", "gc"),
			want:       Info{Version: UnknownVersion, Commit: UnknownCommit},
			wantString: "dev (commit unknown)",
		},
		{
			name: "only the version set at link time", linkVersion: "v2.0.0",
			read: buildInfo("(devel)", "vcs.revision", rev, "vcs.modified", "true"),
			want: Info{Version: "v2.0.0", Commit: rev, Modified: true},
		},
		{
			name: "modified without a revision is not reported",
			read: buildInfo("(devel)", "vcs.modified", "true"),
			want: Info{Version: UnknownVersion, Commit: UnknownCommit},
		},
		{name: "no build information", read: noInfo, want: Info{Version: UnknownVersion, Commit: UnknownCommit}},
		{name: "no reader", want: Info{Version: UnknownVersion, Commit: UnknownCommit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Resolve(tc.linkVersion, tc.linkRev, tc.read)
			if got != tc.want {
				t.Fatalf("Resolve = %+v, want %+v", got, tc.want)
			}
			if tc.wantString != "" && got.String() != tc.wantString {
				t.Fatalf("String = %q, want %q", got.String(), tc.wantString)
			}
		})
	}
}

// TestGetReadsThisBinary checks that Get falls back to the test binary's
// own build information, which go test always records.
func TestGetReadsThisBinary(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build information in the test binary")
	}
	want := Resolve(Version, Commit, func() (*debug.BuildInfo, bool) { return bi, true })
	if got := Get(); got != want {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}
}
