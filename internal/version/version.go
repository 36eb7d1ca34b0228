// Package version holds the build's version, set at link time.
package version

// Version and Commit are overwritten with -ldflags -X at build time.
var (
	Version = "dev"
	Commit  = "unknown"
)
