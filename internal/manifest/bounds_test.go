package manifest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// doubling returns a template of depth levels in which each level calls
// the one below twice: 2^depth executions of the leaf.
func doubling(depth int, leaf string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{{define "l0"}}%s{{end}}`, leaf)
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, `{{define "l%d"}}{{template "l%d"}}{{template "l%d"}}{{end}}`, i, i-1, i-1)
	}
	fmt.Fprintf(&b, `{{template "l%d"}}`, depth)
	return b.String()
}

// TestRenderBounds: templates that expand exponentially, in output or in
// work, are refused by Check with the marble and field named, quickly;
// legitimate repetition still renders.
func TestRenderBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  bool
		data string
		want string // empty: accepted
	}{
		{name: "output of one value", data: doubling(40, strings.Repeat("0123456789abcdef", 64)), want: "exceeds 1048576 bytes (1 MiB) for one value"},
		{name: "work without output", data: doubling(60, ""), want: "more than 100000 steps"},
		{name: "nested ranges", data: `{{range $i, $a := .MarbleRun.MarbleCert.Private}}{{range $.MarbleRun.MarbleCert.Private}}{{range $.MarbleRun.MarbleCert.Private}}{{end}}{{end}}{{end}}`, want: "more than 100000 steps"},
		{name: "env value", env: true, data: doubling(40, strings.Repeat("x", 1024)), want: "exceeds 1048576 bytes"},
		{name: "printf width", data: `{{printf "%0999999999d" 1}}`, want: "printf: a width, precision or index over 4096 is not allowed"},
		{name: "printf star width", data: `{{printf "%*d" 999999999 1}}`, want: "not allowed"},
		{name: "printf many verbs", data: `{{printf "` + strings.Repeat("%[1]s", 300) + `" .MarbleRun.MarbleCert.Cert}}`, want: "printf could produce more than 1048576 bytes"},
		{name: "print many arguments", data: `{{$k := printf "%s%s" "` + strings.Repeat("k", 4000) + `" ""}}{{print` + strings.Repeat(" $k", 400) + `}}`, want: "print could produce more than 1048576 bytes"},
		{name: "printf ordinary", data: `{{printf "%s-%d-%x" "a" 7 .MarbleRun.MarbleCert.Private}}`},
		{name: "moderate repetition", data: doubling(8, "line\n")},
		{name: "range over a key", data: `{{range .MarbleRun.MarbleCert.Private}}.{{end}}`},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			f := newFixtures(t)
			m := validManifest(f)
			marble := m.Marbles["frontend"]
			params := marble.Parameters
			files, env := cloneFiles(params.Files), cloneFiles(params.Env)
			field := `Marbles["frontend"].Parameters.Files["/bomb"]`
			if tc.env {
				env["BOMB"] = File{Data: tc.data}
				field = `Marbles["frontend"].Parameters.Env["BOMB"]`
			} else {
				files["/bomb"] = File{Data: tc.data}
			}
			params.Files, params.Env = files, env
			marble.Parameters = params
			m.Marbles["frontend"] = marble
			start := time.Now()
			err := m.Check()
			took := time.Since(start)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check accepted an exploding template")
			}
			for _, w := range []string{field, tc.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if took > 5*time.Second {
				t.Errorf("refusing the template took %v", took)
			}
		})
	}
}

// TestRenderBoundsPerMarble: many values each under the per-value limit
// are refused together once the marble's output passes its limit.
func TestRenderBoundsPerMarble(t *testing.T) {
	f := newFixtures(t)
	m := validManifest(f)
	marble := m.Marbles["frontend"]
	files := cloneFiles(marble.Parameters.Files)
	for i := range 10 {
		files[fmt.Sprintf("/big/%d", i)] = File{Data: strings.Repeat("x", MaxValueSize)} // each at the value limit
	}
	marble.Parameters.Files = files
	m.Marbles["frontend"] = marble
	err := m.Check()
	if err == nil || !strings.Contains(err.Error(), "exceeds 8388608 bytes (8 MiB) for the marble") || !strings.Contains(err.Error(), `Marbles["frontend"].Parameters.Files["/big/`) {
		t.Fatalf("Check: %v", err)
	}
}

func cloneFiles(in map[string]File) map[string]File {
	out := make(map[string]File, len(in)+1)
	for k, v := range in {
		out[k] = v
	}
	return out
}
