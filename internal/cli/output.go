package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// output is where a command writes: its data to the standard output or an
// -o/--output file, its warnings and notes to the standard error.
type output struct {
	out, errOut io.Writer
}

func (o *output) stdout() io.Writer { return o.out }
func (o *output) stderr() io.Writer { return o.errOut }

// warnf writes a line to stderr.
func (o *output) warnf(format string, args ...any) {
	fmt.Fprintf(o.errOut, format+"\n", args...)
}

// stdoutName is the -o/--output value that means standard output.
const stdoutName = "-"

// writeOutput writes data to the file named by an -o/--output flag (or
// another output path given on the command line); "-" is standard output.
func (o *output) writeOutput(path string, data []byte, perm os.FileMode) error {
	if path == stdoutName {
		if _, err := o.stdout().Write(data); err != nil {
			return fmt.Errorf("writing to standard output: %w", err)
		}
		return nil
	}
	return writeFile(path, data, perm)
}

// reportWriter is where a command reports what it wrote to output: the
// standard output, or the standard error when the data itself went there.
func (o *output) reportWriter(output string) io.Writer {
	if output == stdoutName {
		return o.stderr()
	}
	return o.stdout()
}

// outputName names output in messages.
func outputName(output string) string {
	if output == stdoutName {
		return "standard output"
	}
	return output
}

// writeFile writes data to path without ever replacing what is not a
// regular file:
//   - a path that does not exist is created through a temporary file in
//     the same folder, synced and renamed into place (mode perm);
//   - a regular file is replaced the same way, atomically, keeping its
//     mode (narrowed to perm when perm keeps the file private);
//   - a symbolic link is never replaced: the file it points to is written
//     in place through the link (truncated first if it is a regular file),
//     so that /dev/stdout, /dev/null or a link into /proc work as in a
//     shell; a link to nothing is an error;
//   - a device, pipe or socket is opened and written in place;
//   - a folder is an error.
func writeFile(path string, data []byte, perm os.FileMode) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return replaceFile(path, data, perm)
	case err != nil:
		return fmt.Errorf("writing %s: %w", path, err)
	case fi.Mode().IsRegular():
		return replaceFile(path, data, keptMode(fi.Mode().Perm(), perm))
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("writing %s: it is a symbolic link, and what it points to cannot be used: %w", path, err)
		}
		if target.IsDir() {
			return fmt.Errorf("writing %s: it is a symbolic link to a folder; name a file", path)
		}
		return writeInPlace(path, data, target, perm)
	case fi.IsDir():
		return fmt.Errorf("writing %s: it is a folder; name a file", path)
	default:
		return writeInPlace(path, data, fi, perm)
	}
}

// keptMode is the mode of a replaced file: its old mode, without the
// group and other bits when the new content is private (perm 0600).
func keptMode(old, perm os.FileMode) os.FileMode {
	if perm&0o077 == 0 {
		return old & perm
	}
	return old
}

// writeInPlace opens path (following links) and writes data into it. Only
// a regular file is truncated and synced; a device or pipe is just
// written.
func writeInPlace(path string, data []byte, fi os.FileInfo, perm os.FileMode) error {
	flags := os.O_WRONLY
	regular := fi.Mode().IsRegular()
	if regular {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0) //nolint:gosec // G304: the -o file the user named
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if regular && keptMode(fi.Mode().Perm(), perm) != fi.Mode().Perm() {
		if err := f.Chmod(keptMode(fi.Mode().Perm(), perm)); err != nil {
			f.Close()
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if regular {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// replaceFile replaces path with data atomically: a temporary file in the
// same folder is written, synced and renamed over path.
func replaceFile(path string, data []byte, perm os.FileMode) error {
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
	data, err := os.ReadFile(path) //nolint:gosec // G304: a file the user named
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	return data, nil
}
