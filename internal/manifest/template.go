package manifest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// ReservedSecrets are the values the Coordinator provides under .MarbleRun:
// its Marble root (RootCA), the activating marble's certificate and key
// (MarbleCert), and the Coordinator's root and intermediate certificates.
// Only MarbleCert carries keys; the others carry just Cert.
type ReservedSecrets struct {
	RootCA                  Secret
	MarbleCert              Secret
	CoordinatorRoot         Secret
	CoordinatorIntermediate Secret
}

// TemplateData is the data Files and Env templates are executed with:
// .Secrets.<name>, .MarbleRun.<reserved> and .Previous.Secrets.<name> (the
// values under the previous root secret after a rotation).
type TemplateData struct {
	Secrets   map[string]Secret
	MarbleRun ReservedSecrets
	Previous  struct {
		Secrets map[string]Secret
	}
}

// Compiled holds one marble's Files and Env templates, parsed once and safe
// to render concurrently.
type Compiled struct {
	files []compiledEntry
	env   []compiledEntry
	names []string
	all   bool
}

// compiledEntry is one Files or Env value.
type compiledEntry struct {
	key      string
	verbatim string             // used when tmpl is nil
	tmpl     *template.Template // nil for NoTemplates entries
	refs     templateRefs
	// metered is set when the template can repeat work (range, or calls
	// of other templates): its lists then count steps against the render
	// budget (see meter).
	metered bool
}

// templateRefs is what a template refers to in its data, found statically.
type templateRefs struct {
	names map[string]struct{} // secrets named under .Secrets or .Previous.Secrets
	all   bool                // the secrets maps are used in a way that names no secret
	paths [][]string          // field chains evaluated from the root data
}

// Template functions. Files: pem, hex, raw, base64. Env: pem, hex, base64,
// string. Every function takes a Secret (meaning its key, or its public key
// for certificate types), a Certificate, a PrivateKey, a PublicKey or a
// []byte, and fails on an empty value.
func fileFuncs() template.FuncMap {
	return withBoundedBuiltins(template.FuncMap{"pem": pemFunc, "hex": hexFunc, "raw": rawFunc, "base64": base64Func})
}

func envFuncs() template.FuncMap {
	return withBoundedBuiltins(template.FuncMap{"pem": pemFunc, "hex": hexFunc, "base64": base64Func, "string": stringFunc})
}

// withBoundedBuiltins replaces text/template's builtins that build a
// string from their arguments (printf, print, println, html, js,
// urlquery) with versions that refuse, before building it, a result that
// could pass MaxValueSize: a wide format ("%999999999d") or many uses of a
// large value would otherwise allocate it in one call, before any writer
// limit applies.
func withBoundedBuiltins(m template.FuncMap) template.FuncMap {
	bounded := func(name string, fn func(args ...any) string) func(args ...any) (string, error) {
		return func(args ...any) (string, error) {
			if err := checkBuiltinArgs(name, "", args); err != nil {
				return "", err
			}
			return fn(args...), nil
		}
	}
	m["printf"] = func(format string, args ...any) (string, error) {
		if err := checkBuiltinArgs("printf", format, args); err != nil {
			return "", err
		}
		return fmt.Sprintf(format, args...), nil
	}
	m["print"] = bounded("print", fmt.Sprint)
	m["println"] = bounded("println", fmt.Sprintln)
	m["html"] = bounded("html", template.HTMLEscaper)
	m["js"] = bounded("js", template.JSEscaper)
	m["urlquery"] = bounded("urlquery", template.URLQueryEscaper)
	return m
}

// maxFormatWidth bounds a width or precision in a printf format.
const maxFormatWidth = 4096

// checkBuiltinArgs refuses a call whose result could exceed MaxValueSize
// before the result is built: a printf format may use an argument once per
// verb, and pad each verb to its width.
func checkBuiltinArgs(name, format string, args []any) error {
	verbs := 1
	if name == "printf" {
		var err error
		if verbs, err = checkFormat(format); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	largest, total := 0, 0
	for _, a := range args {
		n := argSize(a)
		total += n
		largest = max(largest, n)
	}
	// The estimate counts one byte per input byte; formatting and escaping
	// make at most a few bytes of each, so a call that passes allocates a
	// few MiB at most, and the value limit then applies to its output.
	if estimate := len(format) + max(total, verbs*largest) + verbs*maxFormatWidth; estimate > MaxValueSize {
		return fmt.Errorf("%s could produce more than %d bytes (1 MiB) from its arguments", name, MaxValueSize)
	}
	return nil
}

// checkFormat counts the verbs of a printf format and refuses widths,
// precisions and argument indexes over maxFormatWidth, and '*' widths.
func checkFormat(format string) (verbs int, err error) {
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		verbs++
		for i++; i < len(format); i++ {
			c := format[i]
			switch {
			case c == '*':
				return 0, errors.New("widths and precisions taken from arguments ('*') are not allowed")
			case c >= '0' && c <= '9':
				n := 0
				for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
					if n = n*10 + int(format[i]-'0'); n > maxFormatWidth {
						return 0, fmt.Errorf("a width, precision or index over %d is not allowed", maxFormatWidth)
					}
				}
				i--
			case strings.IndexByte("+-# .[]", c) >= 0:
			default:
				goto verbDone
			}
		}
	verbDone:
	}
	return verbs, nil
}

// argSize is the size of a template function argument's bytes.
func argSize(a any) int {
	switch v := a.(type) {
	case string:
		return len(v)
	case []byte:
		return len(v)
	case Secret:
		return len(v.Cert.Raw) + len(v.Private) + len(v.Public)
	case *Secret:
		if v == nil {
			return 0
		}
		return len(v.Cert.Raw) + len(v.Private) + len(v.Public)
	case Certificate:
		return len(v.Raw)
	case PrivateKey:
		return len(v)
	case PublicKey:
		return len(v)
	default:
		return len(fmt.Sprint(a))
	}
}

// Compile parses the Files and Env templates of every marble, keyed by
// marble type. All parse errors are reported together. Compile once per
// manifest and render per activation.
func (m *Manifest) Compile() (map[string]*Compiled, error) {
	out := make(map[string]*Compiled, len(m.Marbles))
	var errs []error
	for _, name := range sortedKeys(m.Marbles) {
		marble := m.Marbles[name]
		c, problems := compileParameters(marble.Parameters)
		for _, p := range problems {
			errs = append(errs, p.under(fmt.Sprintf("Marbles[%q].Parameters", name)))
		}
		// TTLSConfig needs the certificate secrets of incoming TLS entries.
		for _, tag := range marble.TLS {
			for _, e := range m.TLS[tag].Incoming {
				if e.Cert != "" && !slices.Contains(c.names, e.Cert) {
					c.names = append(c.names, e.Cert)
				}
			}
		}
		slices.Sort(c.names)
		out[name] = c
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// compileParameters parses one marble's templates. Entries that fail to
// parse are left out of the result and reported.
func compileParameters(params Parameters) (*Compiled, []*FieldError) {
	c := &Compiled{}
	var problems []*FieldError
	names := make(map[string]struct{})
	sections := []struct {
		label   string
		entries map[string]File
		funcs   template.FuncMap
		out     *[]compiledEntry
	}{
		{"Files", params.Files, fileFuncs(), &c.files},
		{"Env", params.Env, envFuncs(), &c.env},
	}
	for _, s := range sections {
		for _, key := range sortedKeys(s.entries) {
			f := s.entries[key]
			entry := compiledEntry{key: key}
			if f.NoTemplates {
				entry.verbatim = f.Data
				*s.out = append(*s.out, entry)
				continue
			}
			t, err := template.New(key).Option("missingkey=error").Funcs(s.funcs).Parse(f.Data)
			if err != nil {
				problems = append(problems, &FieldError{Path: entryPath(s.label, key), Err: err})
				continue
			}
			entry.tmpl = t
			entry.refs = analyze(t)
			entry.metered = meter(t)
			for n := range entry.refs.names {
				names[n] = struct{}{}
			}
			c.all = c.all || entry.refs.all
			*s.out = append(*s.out, entry)
		}
	}
	c.names = sortedKeys(names)
	return c, problems
}

// entryPath is the path of a Files or Env entry below Parameters.
func entryPath(section, key string) string {
	return section + "[" + strconv.Quote(key) + "]"
}

// SecretNames returns, sorted, the secrets the templates name under .Secrets
// or .Previous.Secrets, together with the certificate secrets the marble's
// incoming TLS entries present (see TTLSConfig). all is true when a template uses those maps in a way
// that cannot be resolved statically (ranging over them, index, passing the
// whole data), in which case every secret may be needed.
func (c *Compiled) SecretNames() (names []string, all bool) {
	return slices.Clone(c.names), c.all
}

// Render executes the templates with data and returns the marble's files and
// environment. NoTemplates entries are returned verbatim. An environment
// value must not contain a NUL byte. All failing entries are reported.
func (c *Compiled) Render(data *TemplateData) (files map[string][]byte, env map[string][]byte, err error) {
	if data == nil {
		data = &TemplateData{}
	}
	files = make(map[string][]byte, len(c.files))
	env = make(map[string][]byte, len(c.env))
	b := &renderBudget{}
	var errs []error
	for _, e := range c.files {
		out, err := e.render(data, false, b)
		if err != nil {
			if b.exceeded != nil {
				// The marble's budget is spent: only the entry that spent it
				// is named.
				return nil, nil, &FieldError{Path: entryPath("Files", e.key), Err: err}
			}
			errs = append(errs, &FieldError{Path: entryPath("Files", e.key), Err: err})
			continue
		}
		files[e.key] = out
	}
	for _, e := range c.env {
		out, err := e.render(data, true, b)
		if err != nil {
			if b.exceeded != nil {
				return nil, nil, &FieldError{Path: entryPath("Env", e.key), Err: err}
			}
			errs = append(errs, &FieldError{Path: entryPath("Env", e.key), Err: err})
			continue
		}
		env[e.key] = out
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return files, env, nil
}

// render produces one entry's value, within the budget b of the marble's
// render.
func (e *compiledEntry) render(data *TemplateData, isEnv bool, b *renderBudget) ([]byte, error) {
	var out []byte
	if e.tmpl == nil {
		out = []byte(e.verbatim)
	} else {
		t := e.tmpl
		if e.metered {
			// The step counter belongs to this render: a clone carries it,
			// so concurrent renders of the same template do not share it.
			c, err := t.Clone()
			if err != nil {
				return nil, fmt.Errorf("preparing the template: %w", err)
			}
			t = c.Funcs(template.FuncMap{stepFunc: b.step})
		}
		w := &limitedWriter{budget: b}
		if err := t.Execute(w, data); err != nil {
			if b.exceeded != nil {
				return nil, b.exceeded
			}
			return nil, err
		}
		out = w.buf.Bytes()
	}
	if isEnv && bytes.IndexByte(out, 0) >= 0 {
		return nil, errors.New("environment value contains a NUL byte")
	}
	return out, nil
}

// analyze walks every tree of t. The main template runs with the root data
// as dot; associated templates ({{define}}) get unknown data.
func analyze(t *template.Template) templateRefs {
	a := &analyzer{refs: templateRefs{names: make(map[string]struct{})}}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		a.walk(tt.Root, tt.Name() == t.Name())
	}
	return a.refs
}

type analyzer struct {
	refs templateRefs
}

// walk records references below n. rooted tells whether dot is the root
// data there.
func (a *analyzer) walk(n parse.Node, rooted bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, child := range n.Nodes {
			a.walk(child, rooted)
		}
	case *parse.ActionNode:
		a.walk(n.Pipe, rooted)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, cmd := range n.Cmds {
			a.walk(cmd, rooted)
		}
	case *parse.CommandNode:
		for _, arg := range n.Args {
			a.walk(arg, rooted)
		}
	case *parse.FieldNode:
		a.field(n.Ident, rooted)
	case *parse.VariableNode:
		if n.Ident[0] == "$" {
			if len(n.Ident) == 1 {
				a.refs.all = true
				return
			}
			a.field(n.Ident[1:], true)
		}
	case *parse.ChainNode:
		a.walk(n.Node, rooted)
	case *parse.DotNode:
		if rooted {
			a.refs.all = true
		}
	case *parse.IfNode:
		a.walk(n.Pipe, rooted)
		a.walk(n.List, rooted)
		a.walk(n.ElseList, rooted)
	case *parse.RangeNode:
		a.walk(n.Pipe, rooted)
		a.walk(n.List, false)
		a.walk(n.ElseList, rooted)
	case *parse.WithNode:
		a.walk(n.Pipe, rooted)
		a.walk(n.List, false)
		a.walk(n.ElseList, rooted)
	case *parse.TemplateNode:
		a.walk(n.Pipe, rooted)
	}
}

// field records a field chain. Secret names are collected wherever the
// chain appears; paths only where dot is known to be the root data.
func (a *analyzer) field(ident []string, rooted bool) {
	switch ident[0] {
	case "Secrets":
		if len(ident) == 1 {
			a.refs.all = true
		} else {
			a.refs.names[ident[1]] = struct{}{}
		}
	case "Previous":
		switch {
		case len(ident) == 1 || (len(ident) == 2 && ident[1] == "Secrets"):
			a.refs.all = true
		case ident[1] == "Secrets":
			a.refs.names[ident[2]] = struct{}{}
		}
	}
	if rooted {
		a.refs.paths = append(a.refs.paths, slices.Clone(ident))
	}
}

// checkDataPath reports whether the field chain path can be evaluated on
// TemplateData. Map keys are accepted here; secret names are checked
// separately. A method ends the check, as its result depends on arguments.
func checkDataPath(path []string) error {
	t := reflect.TypeFor[TemplateData]()
	for i, name := range path {
		if _, ok := t.MethodByName(name); ok {
			return nil
		}
		if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface {
			if _, ok := reflect.PointerTo(t).MethodByName(name); ok {
				return nil
			}
		}
		t = deref(t)
		switch t.Kind() {
		case reflect.Struct:
			f, ok := t.FieldByName(name)
			if !ok || !f.IsExported() {
				return fmt.Errorf("template refers to %s, but %s has no field %s", dotted(path), dotted(path[:i]), name)
			}
			t = f.Type
		case reflect.Map:
			if t.Key().Kind() != reflect.String {
				return fmt.Errorf("template refers to %s, but %s is not a string-keyed map", dotted(path), dotted(path[:i]))
			}
			t = t.Elem()
		case reflect.Interface:
			return nil
		default:
			return fmt.Errorf("template refers to %s, but %s has no fields", dotted(path), dotted(path[:i]))
		}
	}
	return nil
}

// dotted renders a field chain as in a template.
func dotted(path []string) string {
	if len(path) == 0 {
		return "the template data"
	}
	return "." + strings.Join(path, ".")
}

// templateBytes returns the bytes a template function argument stands for.
func templateBytes(fn string, arg any) ([]byte, error) {
	var b []byte
	switch v := arg.(type) {
	case Secret:
		b = v.value()
	case Certificate:
		b = v.Raw
	case PrivateKey:
		b = v
	case PublicKey:
		b = v
	case []byte:
		b = v
	default:
		return nil, fmt.Errorf("%s: unsupported argument of type %T", fn, arg)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: the value is empty (a user-defined secret that is not set?)", fn)
	}
	return b, nil
}

// pemFunc encodes a certificate as CERTIFICATE, a public key as PUBLIC KEY
// and a private key as PRIVATE KEY. A certificate secret stands for its
// public key; symmetric-key and plain secrets have no PEM form.
func pemFunc(arg any) (string, error) {
	var typ string
	switch v := arg.(type) {
	case Certificate:
		typ = "CERTIFICATE"
	case PublicKey:
		typ = "PUBLIC KEY"
	case PrivateKey:
		typ = "PRIVATE KEY"
	case Secret:
		if !IsCertificateType(v.Type) {
			return "", fmt.Errorf("pem: a %q secret has no PEM form; use hex or base64", v.Type)
		}
		typ = "PUBLIC KEY"
	default:
		return "", fmt.Errorf("pem: unsupported argument of type %T", arg)
	}
	b, err := templateBytes("pem", arg)
	if err != nil {
		return "", err
	}
	return string(pemBlock(typ, b)), nil
}

func hexFunc(arg any) (string, error) {
	b, err := templateBytes("hex", arg)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func base64Func(arg any) (string, error) {
	b, err := templateBytes("base64", arg)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func rawFunc(arg any) (string, error) {
	b, err := templateBytes("raw", arg)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// stringFunc returns a plain secret's value, which must not contain NUL.
func stringFunc(arg any) (string, error) {
	s, ok := arg.(Secret)
	if !ok {
		return "", fmt.Errorf("string: argument must be a plain secret, got %T", arg)
	}
	if s.Type != SecretTypePlain {
		return "", fmt.Errorf("string: argument must be a plain secret, got a %q secret", s.Type)
	}
	b, err := templateBytes("string", s)
	if err != nil {
		return "", err
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "", errors.New("string: the secret contains a NUL byte")
	}
	return string(b), nil
}

// Limits on rendering one marble's parameters, for every render: the dry
// run when a manifest is set or updated and every activation. They are far
// above what real parameters need (certificates, keys, configuration
// files) and far below what would hurt the Coordinator.
const (
	// MaxValueSize bounds the output of one templated Files or Env value.
	MaxValueSize = 1 << 20
	// MaxMarbleOutputSize bounds the templated output of one marble.
	MaxMarbleOutputSize = 8 << 20
	// MaxRenderSteps bounds the template lists (the bodies of templates,
	// range iterations and branches) that rendering one marble executes,
	// counted in templates that use range or call other templates.
	MaxRenderSteps = 100_000
)

// renderBudget is what is left of one marble render's limits.
type renderBudget struct {
	output   int
	steps    int
	exceeded error
}

// step counts one executed list; it fails once the budget is spent, which
// stops the template's execution.
func (b *renderBudget) step() (string, error) {
	b.steps++
	if b.steps > MaxRenderSteps {
		b.exceeded = fmt.Errorf("the templates execute more than %d steps; simplify the nested template calls or ranges", MaxRenderSteps)
		return "", b.exceeded
	}
	return "", nil
}

// limitedWriter collects one value and stops the execution once the value
// or the marble's output passes its limit.
type limitedWriter struct {
	buf    bytes.Buffer
	budget *renderBudget
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	switch {
	case w.buf.Len()+len(p) > MaxValueSize:
		w.budget.exceeded = fmt.Errorf("the template output exceeds %d bytes (1 MiB) for one value", MaxValueSize)
	case w.budget.output+len(p) > MaxMarbleOutputSize:
		w.budget.exceeded = fmt.Errorf("the templates' output exceeds %d bytes (8 MiB) for the marble", MaxMarbleOutputSize)
	}
	if w.budget.exceeded != nil {
		return 0, w.budget.exceeded
	}
	w.budget.output += len(p)
	return w.buf.Write(p)
}

// stepFunc names the function meter inserts; it is not a function a
// manifest can call (templates are parsed without it).
const stepFunc = "marblemesh_render_step"

// meter inserts a call of stepFunc at the start of every list of every
// tree of t when t can repeat work (a range, or a call of a template), so
// that a render counts its steps. It reports whether it did.
func meter(t *template.Template) bool {
	repeats := false
	for _, tt := range t.Templates() {
		if tt.Tree != nil && tt.Root != nil && hasRepetition(tt.Root) {
			repeats = true
			break
		}
	}
	if !repeats {
		return false
	}
	// The trees are changed after parsing, so the function needs no
	// declaration here; each render binds its own counter to a clone, and
	// an execution without one fails ("function not defined").
	for _, tt := range t.Templates() {
		if tt.Tree != nil && tt.Root != nil {
			insertSteps(tt.Root)
		}
	}
	return true
}

// hasRepetition reports whether n contains a range or a template call.
func hasRepetition(n parse.Node) bool {
	found := false
	walkLists(n, func(l *parse.ListNode) {
		for _, c := range l.Nodes {
			switch c.(type) {
			case *parse.RangeNode, *parse.TemplateNode:
				found = true
			}
		}
	})
	return found
}

// insertSteps puts a step action at the start of every list below n.
func insertSteps(n parse.Node) {
	walkLists(n, func(l *parse.ListNode) {
		step := &parse.ActionNode{NodeType: parse.NodeAction, Pos: l.Pos, Pipe: &parse.PipeNode{
			NodeType: parse.NodePipe, Pos: l.Pos,
			Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Pos: l.Pos, Args: []parse.Node{parse.NewIdentifier(stepFunc).SetPos(l.Pos)}}},
		}}
		l.Nodes = append([]parse.Node{step}, l.Nodes...)
	})
}

// walkLists calls f for every list node at or below n, parents first.
func walkLists(n parse.Node, f func(*parse.ListNode)) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		f(n)
		for _, c := range n.Nodes {
			walkLists(c, f)
		}
	case *parse.IfNode:
		walkBranch(&n.BranchNode, f)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, f)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, f)
	}
}

func walkBranch(b *parse.BranchNode, f func(*parse.ListNode)) {
	if b.List != nil {
		walkLists(b.List, f)
	}
	if b.ElseList != nil {
		walkLists(b.ElseList, f)
	}
}
