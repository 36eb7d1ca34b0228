package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Output formats of --format.
const (
	formatText = "text"
	formatJSON = "json"
)

// formatFlag is the --format flag of commands that print data. -o stays
// what it is in MarbleRun: the file a command writes.
type formatFlag struct{ value string }

var _ pflag.Value = (*formatFlag)(nil)

func (f *formatFlag) String() string { return f.value }
func (f *formatFlag) Type() string   { return "text|json" }
func (f *formatFlag) Set(v string) error {
	switch v {
	case formatText, formatJSON:
		f.value = v
		return nil
	}
	return fmt.Errorf("want text or json, got %q", v)
}

func (f *formatFlag) json() bool { return f.value == formatJSON }

// addFormatFlag adds --format to cmd.
func addFormatFlag(cmd *cobra.Command) *formatFlag {
	f := &formatFlag{value: formatText}
	cmd.Flags().Var(f, "format", "output format: text for people, json for programs")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{formatText, formatJSON}, cobra.ShellCompDirectiveNoFileComp
	})
	return f
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	out = append(out, '\n')
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeFile replaces path with data atomically: a temporary file in the
// same folder is written, synced and renamed over path.
func writeFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// readFile reads a file named on the command line, saying which argument
// it was for.
func readFile(what, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	return data, nil
}
