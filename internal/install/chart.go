package install

import (
	"fmt"
	"io/fs"
	"path"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/marblemesh/marblemesh/charts"
)

// ReleaseName is the name of the Helm release of an installation.
const ReleaseName = "marblerun"

// LoadChart loads the chart at chartPath (a folder or a .tgz archive), or
// the embedded marblerun chart when chartPath is empty.
func LoadChart(chartPath string) (*chart.Chart, error) {
	if chartPath != "" {
		c, err := loader.Load(chartPath)
		if err != nil {
			return nil, withNext(fmt.Errorf("loading the chart %s: %w", chartPath, err),
				"Give --marblerun-chart-path a chart folder or .tgz archive, or leave it out to use the chart built into marblerun.")
		}
		return c, nil
	}
	c, err := loadFS(charts.MarbleRun())
	if err != nil {
		return nil, fmt.Errorf("loading the embedded marblerun chart: %w", err)
	}
	return c, nil
}

// loadFS loads a chart from the files of fsys, rooted at the chart folder.
func loadFS(fsys fs.FS) (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: path.Clean(p), Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loader.LoadFiles(files)
}
