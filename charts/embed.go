// Package charts embeds the project's Helm charts.
package charts

import (
	"embed"
	"io/fs"
)

// files holds the marblerun chart, including the files whose names start
// with an underscore (the template helpers).
//
//go:embed all:marblerun
var files embed.FS

// MarbleRun returns the marblerun chart's files, rooted at the chart folder
// (Chart.yaml, values.yaml, values.schema.json, templates/...).
func MarbleRun() fs.FS {
	sub, err := fs.Sub(files, "marblerun")
	if err != nil {
		// fs.Sub fails only for an invalid path; "marblerun" is valid.
		panic(err)
	}
	return sub
}
