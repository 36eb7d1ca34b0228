// Package version tells which build of the project is running: the version
// and commit set at link time (make, hack/image), or else those the Go
// toolchain recorded in the binary's build information (plain go build, go
// install, go run).
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Version and Commit are set with -ldflags -X at build time. Left empty,
// Get reads them from the binary's build information.
var (
	Version = ""
	Commit  = ""
)

// Unknown values of Info when neither the link-time variables nor the build
// information say.
const (
	UnknownVersion = "dev"
	UnknownCommit  = "unknown"
)

// Info is the version of the running build.
type Info struct {
	// Version is the link-time version, else the main module's version
	// (a tag, or a pseudo-version the go command derived from the commit),
	// else UnknownVersion.
	Version string
	// Commit is the link-time commit, else the VCS revision go build
	// stamped (vcs.revision), else UnknownCommit.
	Commit string
	// Modified is true when the build information says the working tree
	// had uncommitted changes (vcs.modified).
	Modified bool
}

// String is "VERSION (commit COMMIT)", with ", modified" after the commit
// when the tree had uncommitted changes.
func (i Info) String() string {
	if i.Modified {
		return fmt.Sprintf("%s (commit %s, modified)", i.Version, i.Commit)
	}
	return fmt.Sprintf("%s (commit %s)", i.Version, i.Commit)
}

// BuildInfoReader returns the binary's build information, as
// debug.ReadBuildInfo does.
type BuildInfoReader func() (*debug.BuildInfo, bool)

// Get returns the running build's version: Resolve of the link-time
// variables and debug.ReadBuildInfo.
func Get() Info {
	return Resolve(Version, Commit, debug.ReadBuildInfo)
}

// Resolve prefers the link-time version and commit, and fills what they
// leave empty from the build information that read returns.
func Resolve(linkVersion, linkCommit string, read BuildInfoReader) Info {
	info := Info{Version: strings.TrimSpace(linkVersion), Commit: strings.TrimSpace(linkCommit)}
	var bi *debug.BuildInfo
	if read != nil {
		if b, ok := read(); ok {
			bi = b
		}
	}
	if bi != nil {
		if info.Version == "" {
			if v := bi.Main.Version; v != "" && v != "(devel)" {
				info.Version = v
			}
		}
		if info.Commit == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					info.Commit = s.Value
				case "vcs.modified":
					info.Modified = s.Value == "true"
				}
			}
			if info.Commit == "" {
				info.Modified = false
			}
		}
	}
	if info.Version == "" {
		info.Version = UnknownVersion
	}
	if info.Commit == "" {
		info.Commit = UnknownCommit
	}
	return info
}
