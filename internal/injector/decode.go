package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// This file decodes an AdmissionReview request and its Pod in one pass
// over the bytes, reading the few fields the rules use and skipping (but
// validating) everything else. It follows the decoding rules of the API
// machinery's JSON decoder (sigs.k8s.io/json in strict mode): field names
// match case-sensitively, a duplicate field or map key is an error, null
// leaves a field at its zero value, a value of the wrong type is an error
// that does not stop validation, invalid UTF-8 in strings becomes U+FFFD,
// and nesting deeper than 10000 is a syntax error. A differential fuzz test
// holds it to that decoder.

// fieldPath names a field for error messages. Its parts are joined only
// when an error is reported, so naming fields costs nothing on success.
type fieldPath [4]string

func fp(s string) fieldPath { return fieldPath{s} }

// with appends s to the path.
func (f fieldPath) with(s string) fieldPath {
	for i := range f {
		if f[i] == "" {
			f[i] = s
			return f
		}
	}
	f[len(f)-1] += s
	return f
}

func (f fieldPath) String() string { return f[0] + f[1] + f[2] + f[3] }

// maxNestingDepth is the nesting limit of encoding/json's scanner.
const maxNestingDepth = 10000

// syntaxError reports input that is not JSON.
type syntaxError struct {
	msg    string
	offset int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.offset) }

// decoded is an AdmissionReview request as read by the parser.
type decoded struct {
	apiVersion string
	kind       string
	hasRequest bool
	meta       requestMeta
	// hasObject is false when request.object is absent or null.
	hasObject bool
	pod       *Pod
	// podErr is the first problem inside request.object; envErr the first
	// elsewhere.
	podErr error
	envErr error
}

type parser struct {
	data     []byte
	i        int
	depth    int
	inObject bool
	podErr   error
	envErr   error
	// key is the last member name read; it aliases data or scratch.
	key     []byte
	scratch []byte
}

// decodeReview parses a request body. A syntax error is returned as the
// error; type and duplicate-field errors are recorded in the result.
func decodeReview(data []byte) (d decoded, err error) {
	p := parser{data: data}
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(*syntaxError)
			if !ok {
				panic(r)
			}
			d, err = decoded{}, se
		}
	}()
	p.review(&d)
	p.skipWS()
	if p.i != len(p.data) {
		p.fail("invalid character after top-level value")
	}
	d.podErr, d.envErr = p.podErr, p.envErr
	return d, nil
}

// decodePodJSON parses a Pod on its own.
func decodePodJSON(data []byte) (pod *Pod, err error) {
	p := parser{data: data, inObject: true}
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(*syntaxError)
			if !ok {
				panic(r)
			}
			pod, err = nil, se
		}
	}()
	pod = new(Pod)
	p.pod(pod)
	p.skipWS()
	if p.i != len(p.data) {
		p.fail("invalid character after top-level value")
	}
	if p.podErr != nil {
		return nil, p.podErr
	}
	return pod, nil
}

func (p *parser) fail(msg string) {
	panic(&syntaxError{msg: msg, offset: p.i})
}

// typeError records a decoding problem that is not a syntax error.
func (p *parser) typeError(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	if p.inObject {
		if p.podErr == nil {
			p.podErr = err
		}
	} else if p.envErr == nil {
		p.envErr = err
	}
}

func (p *parser) skipWS() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek returns the first byte of the next value.
func (p *parser) peek() byte {
	p.skipWS()
	if p.i >= len(p.data) {
		p.fail("unexpected end of JSON input")
	}
	return p.data[p.i]
}

func (p *parser) literal(lit string) {
	if !bytes.HasPrefix(p.data[p.i:], []byte(lit)) {
		if len(p.data)-p.i < len(lit) && bytes.HasPrefix([]byte(lit), p.data[p.i:]) {
			p.i = len(p.data)
			p.fail("unexpected end of JSON input")
		}
		p.fail("invalid literal")
	}
	p.i += len(lit)
}

func (p *parser) enter() {
	p.depth++
	if p.depth > maxNestingDepth {
		p.fail("exceeded max depth")
	}
}

// kindName names a JSON value by its first byte, for type errors.
func kindName(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// beginObject opens an object. For null it returns false; for another type
// it records a type error, skips the value and returns false.
func (p *parser) beginObject(field fieldPath) bool { return p.begin(field, '{', "an object") }

// beginArray opens an array, like beginObject.
func (p *parser) beginArray(field fieldPath) bool { return p.begin(field, '[', "an array") }

func (p *parser) begin(field fieldPath, open byte, what string) bool {
	switch c := p.peek(); c {
	case open:
		p.i++
		p.enter()
		return true
	case 'n':
		p.literal("null")
		return false
	default:
		p.typeError("%s: cannot decode %s into %s", field, kindName(c), what)
		p.skipValue()
		return false
	}
}

// more reports whether another member or element follows in an open object
// or array ending with closing, consuming the separating comma; at the end
// it consumes closing and leaves the nesting level.
func (p *parser) more(first *bool, closing byte, afterWhat string) bool {
	p.skipWS()
	if p.i >= len(p.data) {
		p.fail("unexpected end of JSON input")
	}
	switch c := p.data[p.i]; {
	case c == closing:
		p.i++
		p.depth--
		return false
	case *first:
	case c == ',':
		p.i++
		p.skipWS()
	default:
		p.fail("invalid character after " + afterWhat)
	}
	*first = false
	return true
}

// nextMember reads the next member name of an open object into p.key and
// consumes the colon; it returns false at the closing brace.
func (p *parser) nextMember(first *bool) bool {
	if !p.more(first, '}', "object key:value pair") {
		return false
	}
	if p.i >= len(p.data) {
		p.fail("unexpected end of JSON input")
	}
	if p.data[p.i] != '"' {
		p.fail("invalid character looking for beginning of object key string")
	}
	p.key = p.stringBytes()
	p.skipWS()
	if p.i >= len(p.data) {
		p.fail("unexpected end of JSON input")
	}
	if p.data[p.i] != ':' {
		p.fail("invalid character after object key")
	}
	p.i++
	return true
}

// nextElement reports whether another element follows in an open array.
func (p *parser) nextElement(first *bool) bool { return p.more(first, ']', "array element") }

// isNull consumes a null.
func (p *parser) isNull() bool {
	if p.peek() == 'n' {
		p.literal("null")
		return true
	}
	return false
}

// str decodes a string value; null gives "".
func (p *parser) str(field fieldPath) string {
	switch c := p.peek(); c {
	case '"':
		return string(p.stringBytes())
	case 'n':
		p.literal("null")
		return ""
	default:
		p.typeError("%s: cannot decode %s into a string", field, kindName(c))
		p.skipValue()
		return ""
	}
}

// optBool decodes a bool value; null gives nil.
func (p *parser) optBool(field fieldPath) *bool {
	switch c := p.peek(); c {
	case 't':
		p.literal("true")
		v := true
		return &v
	case 'f':
		p.literal("false")
		v := false
		return &v
	case 'n':
		p.literal("null")
		return nil
	default:
		p.typeError("%s: cannot decode %s into a bool", field, kindName(c))
		p.skipValue()
		return nil
	}
}

// raw returns a copy of the next value's JSON text.
func (p *parser) raw() []byte {
	p.skipWS()
	start := p.i
	p.skipValue()
	return bytes.Clone(p.data[start:p.i])
}

// dup records a duplicate field.
func (p *parser) dup(field string) {
	p.typeError("duplicate field %q", field)
}

// once marks field b of an object in set and records a duplicate when it
// was marked before.
func (p *parser) once(set *uint32, b uint, field string) {
	if *set&(1<<b) != 0 {
		p.dup(field)
	}
	*set |= 1 << b
}

// stringBytes reads a string whose opening quote is at p.i and returns its
// decoded bytes, which alias the input when nothing needs unescaping.
func (p *parser) stringBytes() []byte {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			s := p.data[start:p.i]
			p.i++
			return s
		case c == '\\' || c >= utf8.RuneSelf:
			return p.slowString(start)
		case c < 0x20:
			p.fail("invalid character in string literal")
		}
		p.i++
	}
	p.fail("unexpected end of JSON input")
	return nil
}

// slowString decodes a string with escapes or non-ASCII bytes starting at
// start, into p.scratch.
func (p *parser) slowString(start int) []byte {
	buf := append(p.scratch[:0], p.data[start:p.i]...)
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			p.scratch = buf
			return buf
		case c < 0x20:
			p.fail("invalid character in string literal")
		case c == '\\':
			p.i++
			if p.i >= len(p.data) {
				p.fail("unexpected end of JSON input")
			}
			switch e := p.data[p.i]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
				p.i++
			case 'b':
				buf = append(buf, '\b')
				p.i++
			case 'f':
				buf = append(buf, '\f')
				p.i++
			case 'n':
				buf = append(buf, '\n')
				p.i++
			case 'r':
				buf = append(buf, '\r')
				p.i++
			case 't':
				buf = append(buf, '\t')
				p.i++
			case 'u':
				p.i++
				r := p.hex4()
				if utf16.IsSurrogate(r) {
					if r2, ok := p.peekHex4Escape(); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							p.i += 6
							buf = utf8.AppendRune(buf, dec)
							break
						}
					}
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.fail("invalid character in string escape code")
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.data[p.i:])
			if r == utf8.RuneError && size == 1 {
				buf = utf8.AppendRune(buf, utf8.RuneError)
			} else {
				buf = append(buf, p.data[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	p.fail("unexpected end of JSON input")
	return nil
}

// hex4 reads four hex digits.
func (p *parser) hex4() rune {
	var r rune
	for k := 0; k < 4; k++ {
		if p.i >= len(p.data) {
			p.fail("unexpected end of JSON input")
		}
		c := p.data[p.i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			p.fail("invalid character in \\u hexadecimal character escape")
		}
		r = r*16 + rune(c)
		p.i++
	}
	return r
}

// peekHex4Escape decodes a \uXXXX escape at p.i without consuming it.
func (p *parser) peekHex4Escape() (rune, bool) {
	d := p.data[p.i:]
	if len(d) < 6 || d[0] != '\\' || d[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range d[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// skipValue validates and skips one value.
func (p *parser) skipValue() {
	switch c := p.peek(); {
	case c == '{':
		p.i++
		p.enter()
		for first := true; p.nextMember(&first); {
			p.skipValue()
		}
	case c == '[':
		p.i++
		p.enter()
		for first := true; p.nextElement(&first); {
			p.skipValue()
		}
	case c == '"':
		p.skipString()
	case c == 't':
		p.literal("true")
	case c == 'f':
		p.literal("false")
	case c == 'n':
		p.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		p.number()
	default:
		p.fail("invalid character looking for beginning of value")
	}
}

// skipString validates a string without decoding it.
func (p *parser) skipString() {
	p.i++
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return
		case c < 0x20:
			p.fail("invalid character in string literal")
		case c == '\\':
			p.i++
			if p.i >= len(p.data) {
				p.fail("unexpected end of JSON input")
			}
			switch p.data[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				p.i++
				p.hex4()
			default:
				p.fail("invalid character in string escape code")
			}
		default:
			p.i++
		}
	}
	p.fail("unexpected end of JSON input")
}

// number validates a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *parser) number() {
	d := p.data
	if d[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(d) && '0' <= d[p.i] && d[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	switch {
	case p.i >= len(d):
		p.fail("unexpected end of JSON input")
	case d[p.i] == '0':
		p.i++
	case '1' <= d[p.i] && d[p.i] <= '9':
		digits()
	default:
		p.fail("invalid character in numeric literal")
	}
	if p.i < len(d) && d[p.i] == '.' {
		p.i++
		if p.i >= len(d) {
			p.fail("unexpected end of JSON input")
		}
		if digits() == 0 {
			p.fail("invalid character after decimal point in numeric literal")
		}
	}
	if p.i < len(d) && (d[p.i] == 'e' || d[p.i] == 'E') {
		p.i++
		if p.i < len(d) && (d[p.i] == '+' || d[p.i] == '-') {
			p.i++
		}
		if p.i >= len(d) {
			p.fail("unexpected end of JSON input")
		}
		if digits() == 0 {
			p.fail("invalid character in exponent of numeric literal")
		}
	}
}

// review decodes the AdmissionReview envelope.
func (p *parser) review(d *decoded) {
	if !p.beginObject(fp("AdmissionReview")) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "apiVersion":
			p.once(&set, 0, "apiVersion")
			d.apiVersion = p.str(fp("apiVersion"))
		case "kind":
			p.once(&set, 1, "kind")
			d.kind = p.str(fp("kind"))
		case "request":
			p.once(&set, 2, "request")
			p.request(d)
		default:
			p.skipValue()
		}
	}
}

func (p *parser) request(d *decoded) {
	if !p.beginObject(fp("request")) {
		return
	}
	d.hasRequest = true
	m := &d.meta
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "uid":
			p.once(&set, 0, "request.uid")
			m.UID = p.str(fp("request.uid"))
		case "kind":
			p.once(&set, 1, "request.kind")
			p.gvk(&m.Kind)
		case "name":
			p.once(&set, 3, "request.name")
			m.Name = p.str(fp("request.name"))
		case "namespace":
			p.once(&set, 4, "request.namespace")
			m.Namespace = p.str(fp("request.namespace"))
		case "operation":
			p.once(&set, 5, "request.operation")
			m.Operation = p.str(fp("request.operation"))
		case "dryRun":
			p.once(&set, 6, "request.dryRun")
			m.DryRun = p.optBool(fp("request.dryRun"))
		case "object":
			p.once(&set, 7, "request.object")
			if p.isNull() {
				d.hasObject, d.pod = false, nil
				continue
			}
			d.hasObject = true
			d.pod = new(Pod)
			p.inObject = true
			p.pod(d.pod)
			p.inObject = false
		default:
			p.skipValue()
		}
	}
}

func (p *parser) gvk(g *groupVersionKind) {
	if !p.beginObject(fp("request.kind")) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "group":
			p.once(&set, 0, "group")
			g.Group = p.str(fp("request.kind.group"))
		case "version":
			p.once(&set, 1, "version")
			g.Version = p.str(fp("request.kind.version"))
		case "kind":
			p.once(&set, 2, "kind")
			g.Kind = p.str(fp("request.kind.kind"))
		default:
			p.skipValue()
		}
	}
}

func (p *parser) pod(pod *Pod) {
	if !p.beginObject(fp("pod")) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "apiVersion":
			p.once(&set, 0, "apiVersion")
			pod.APIVersion = p.str(fp("apiVersion"))
		case "kind":
			p.once(&set, 1, "kind")
			pod.Kind = p.str(fp("kind"))
		case "metadata":
			p.once(&set, 2, "metadata")
			p.meta(&pod.Metadata)
		case "spec":
			p.once(&set, 3, "spec")
			p.spec(&pod.Spec)
		default:
			p.skipValue()
		}
	}
}

func (p *parser) meta(m *PodMeta) {
	if !p.beginObject(fp("metadata")) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "name":
			p.once(&set, 0, "metadata.name")
			m.Name = p.str(fp("metadata.name"))
		case "generateName":
			p.once(&set, 1, "metadata.generateName")
			m.GenerateName = p.str(fp("metadata.generateName"))
		case "namespace":
			p.once(&set, 2, "metadata.namespace")
			m.Namespace = p.str(fp("metadata.namespace"))
		case "labels":
			p.once(&set, 3, "metadata.labels")
			m.Labels = p.stringMap(fp("metadata.labels"))
		default:
			p.skipValue()
		}
	}
}

func (p *parser) stringMap(field fieldPath) map[string]string {
	if !p.beginObject(field) {
		return nil
	}
	m := map[string]string{}
	for first := true; p.nextMember(&first); {
		k := string(p.key)
		if _, ok := m[k]; ok {
			p.dup(field.String() + "." + k)
		}
		m[k] = p.str(field)
	}
	return m
}

func (p *parser) rawMap(field fieldPath) map[string]json.RawMessage {
	if !p.beginObject(field) {
		return nil
	}
	m := map[string]json.RawMessage{}
	for first := true; p.nextMember(&first); {
		k := string(p.key)
		if _, ok := m[k]; ok {
			p.dup(field.String() + "." + k)
		}
		m[k] = p.raw()
	}
	return m
}

func (p *parser) spec(s *PodSpec) {
	if !p.beginObject(fp("spec")) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "containers":
			p.once(&set, 0, "spec.containers")
			s.Containers = p.containers(fp("spec.containers"))
		case "initContainers":
			p.once(&set, 1, "spec.initContainers")
			s.InitContainers = p.containers(fp("spec.initContainers"))
		case "volumes":
			p.once(&set, 2, "spec.volumes")
			s.Volumes = p.volumes()
		case "tolerations":
			p.once(&set, 3, "spec.tolerations")
			s.Tolerations = p.tolerations()
		default:
			p.skipValue()
		}
	}
}

func (p *parser) containers(field fieldPath) []*Container {
	if !p.beginArray(field) {
		return nil
	}
	cs := []*Container{}
	for first := true; p.nextElement(&first); {
		if p.isNull() {
			cs = append(cs, nil)
			continue
		}
		c := new(Container)
		p.container(field, c)
		cs = append(cs, c)
	}
	return cs
}

func (p *parser) container(field fieldPath, c *Container) {
	if !p.beginObject(field) {
		return
	}
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "name":
			p.once(&set, 0, "name")
			c.Name = p.str(field.with(".name"))
		case "env":
			p.once(&set, 1, "env")
			c.Env = p.env(field.with(".env"))
		case "volumeMounts":
			p.once(&set, 2, "volumeMounts")
			c.VolumeMounts = p.mounts(field.with(".volumeMounts"))
		case "resources":
			p.once(&set, 3, "resources")
			c.Resources = p.resources(field.with(".resources"))
		default:
			p.skipValue()
		}
	}
}

func (p *parser) env(field fieldPath) []EnvVar {
	if !p.beginArray(field) {
		return nil
	}
	env := []EnvVar{}
	for first := true; p.nextElement(&first); {
		var e EnvVar
		if p.beginObject(field) {
			var set uint32
			for f := true; p.nextMember(&f); {
				if string(p.key) == "name" {
					p.once(&set, 0, "name")
					e.Name = p.str(field.with(".name"))
					continue
				}
				p.skipValue()
			}
		}
		env = append(env, e)
	}
	return env
}

func (p *parser) mounts(field fieldPath) []VolumeMount {
	if !p.beginArray(field) {
		return nil
	}
	ms := []VolumeMount{}
	for first := true; p.nextElement(&first); {
		var m VolumeMount
		if p.beginObject(field) {
			var set uint32
			for f := true; p.nextMember(&f); {
				switch string(p.key) {
				case "name":
					p.once(&set, 0, "name")
					m.Name = p.str(field.with(".name"))
				case "mountPath":
					p.once(&set, 1, "mountPath")
					m.MountPath = p.str(field.with(".mountPath"))
				default:
					p.skipValue()
				}
			}
		}
		ms = append(ms, m)
	}
	return ms
}

func (p *parser) resources(field fieldPath) *Resources {
	if !p.beginObject(field) {
		return nil
	}
	r := new(Resources)
	var set uint32
	for first := true; p.nextMember(&first); {
		switch string(p.key) {
		case "limits":
			p.once(&set, 0, "limits")
			r.Limits = p.rawMap(field.with(".limits"))
		case "requests":
			p.once(&set, 1, "requests")
			r.Requests = p.rawMap(field.with(".requests"))
		default:
			p.skipValue()
		}
	}
	return r
}

func (p *parser) volumes() []Volume {
	if !p.beginArray(fp("spec.volumes")) {
		return nil
	}
	vs := []Volume{}
	for first := true; p.nextElement(&first); {
		var v Volume
		if p.beginObject(fp("spec.volumes")) {
			var set uint32
			for f := true; p.nextMember(&f); {
				switch string(p.key) {
				case "name":
					p.once(&set, 0, "name")
					v.Name = p.str(fp("spec.volumes.name"))
				case "downwardAPI":
					p.once(&set, 1, "downwardAPI")
					v.DownwardAPI = p.downwardAPI()
				default:
					p.skipValue()
				}
			}
		}
		vs = append(vs, v)
	}
	return vs
}

func (p *parser) downwardAPI() *DownwardAPIVolSource {
	field := fp("spec.volumes.downwardAPI")
	if !p.beginObject(field) {
		return nil
	}
	src := new(DownwardAPIVolSource)
	var set uint32
	for first := true; p.nextMember(&first); {
		if string(p.key) != "items" {
			p.skipValue()
			continue
		}
		p.once(&set, 0, "items")
		if !p.beginArray(field.with(".items")) {
			continue
		}
		src.Items = []DownwardAPIFile{}
		for f := true; p.nextElement(&f); {
			var it DownwardAPIFile
			if p.beginObject(field.with(".items")) {
				var iset uint32
				for g := true; p.nextMember(&g); {
					switch string(p.key) {
					case "path":
						p.once(&iset, 0, "path")
						it.Path = p.str(field.with(".items.path"))
					case "fieldRef":
						p.once(&iset, 1, "fieldRef")
						it.FieldRef = p.fieldRef(field.with(".items.fieldRef"))
					default:
						p.skipValue()
					}
				}
			}
			src.Items = append(src.Items, it)
		}
	}
	return src
}

func (p *parser) fieldRef(field fieldPath) *ObjectFieldSelector {
	if !p.beginObject(field) {
		return nil
	}
	sel := new(ObjectFieldSelector)
	var set uint32
	for first := true; p.nextMember(&first); {
		if string(p.key) == "fieldPath" {
			p.once(&set, 0, "fieldPath")
			sel.FieldPath = p.str(field.with(".fieldPath"))
			continue
		}
		p.skipValue()
	}
	return sel
}

func (p *parser) tolerations() []Toleration {
	field := fp("spec.tolerations")
	if !p.beginArray(field) {
		return nil
	}
	ts := []Toleration{}
	for first := true; p.nextElement(&first); {
		var t Toleration
		if p.beginObject(field) {
			var set uint32
			for f := true; p.nextMember(&f); {
				switch string(p.key) {
				case "key":
					p.once(&set, 0, "key")
					t.Key = p.str(field.with(".key"))
				case "operator":
					p.once(&set, 1, "operator")
					t.Operator = p.str(field.with(".operator"))
				case "effect":
					p.once(&set, 2, "effect")
					t.Effect = p.str(field.with(".effect"))
				default:
					p.skipValue()
				}
			}
		}
		ts = append(ts, t)
	}
	return ts
}
