package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Parse decodes a JSON manifest. It rejects an empty document, invalid JSON,
// data after the top-level object and values of the wrong type; errors name
// the offending field and byte offset but never quote the document. Parse
// does not validate the manifest: call Check for that.
func Parse(raw []byte) (*Manifest, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(bytes.TrimRight(trimmed, " \t\r\n")) == 0 {
		return nil, errors.New("manifest: empty document")
	}
	if trimmed[0] != '{' {
		return nil, errors.New("manifest: the top-level value must be a JSON object")
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", describeDecodeError(raw, err))
	}
	return &m, nil
}

// describeDecodeError turns an encoding/json error into one that names the
// field and offset without quoting the input.
func describeDecodeError(raw []byte, err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		path, complete := jsonPathAt(raw, syntaxErr.Offset)
		if complete {
			return fmt.Errorf("unexpected data after the top-level object at offset %d", syntaxErr.Offset)
		}
		if path == "" {
			return fmt.Errorf("invalid JSON at offset %d", syntaxErr.Offset)
		}
		return fmt.Errorf("invalid JSON at offset %d (in %s)", syntaxErr.Offset, path)
	case errors.As(err, &typeErr):
		path, _ := jsonPathAt(raw, typeErr.Offset)
		if path == "" {
			path = typeErr.Field
		}
		return fmt.Errorf("%s: cannot use a JSON %s as %s (offset %d)", path, jsonKind(typeErr.Value), typeErr.Type, typeErr.Offset)
	}
	if located := locateValueError(raw); located != nil {
		return located
	}
	return fmt.Errorf("decoding: %w", err)
}

// jsonKind reduces an UnmarshalTypeError value description ("number -5",
// "string", ...) to the kind, dropping any literal.
func jsonKind(value string) string {
	kind, _, _ := strings.Cut(value, " ")
	return kind
}

// locateValueError finds the first File or Certificate value that fails to
// decode and returns its error prefixed with its path. These values have
// their own decoders, whose errors encoding/json returns without position.
func locateValueError(raw []byte) error {
	var shadow struct {
		Marbles map[string]struct {
			Parameters struct {
				Files map[string]json.RawMessage
				Env   map[string]json.RawMessage
			}
		}
		Secrets map[string]struct {
			Cert json.RawMessage
		}
	}
	// Type errors elsewhere leave the shadow partly filled, which is enough.
	_ = json.Unmarshal(raw, &shadow)
	for _, name := range sortedKeys(shadow.Marbles) {
		params := shadow.Marbles[name].Parameters
		for _, section := range []struct {
			label   string
			entries map[string]json.RawMessage
		}{{"Files", params.Files}, {"Env", params.Env}} {
			for _, key := range sortedKeys(section.entries) {
				var f File
				if err := f.UnmarshalJSON(section.entries[key]); err != nil {
					return fmt.Errorf("Marbles[%q].Parameters.%s[%q]: %w", name, section.label, key, err)
				}
			}
		}
	}
	for _, name := range sortedKeys(shadow.Secrets) {
		data := shadow.Secrets[name].Cert
		if len(data) == 0 {
			continue
		}
		var c Certificate
		if err := c.UnmarshalJSON(data); err != nil {
			return fmt.Errorf("Secrets[%q].Cert: %w", name, err)
		}
	}
	return nil
}

// jsonPathAt returns the path (in Manifest field terms, e.g.
// `Marbles["a"].Parameters.Argv[0]`) of the value being read at byte offset
// off, and whether a complete top-level value ended before off.
func jsonPathAt(raw []byte, off int64) (string, bool) {
	type frame struct {
		typ       reflect.Type // nil when unknown
		object    bool
		expectKey bool
		key       string
		keyType   reflect.Type
		index     int
		prefix    string
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var stack []*frame
	current := ""
	topDone := false

	// childOf returns the path and type of the value about to be read.
	childOf := func(f *frame) (string, reflect.Type) {
		if f.object {
			return f.prefix + f.key, f.keyType
		}
		var elem reflect.Type
		if f.typ != nil && (f.typ.Kind() == reflect.Slice || f.typ.Kind() == reflect.Array) {
			elem = f.typ.Elem()
		}
		return f.prefix + "[" + strconv.Itoa(f.index) + "]", elem
	}
	valueDone := func() {
		if len(stack) == 0 {
			topDone = true
			return
		}
		f := stack[len(stack)-1]
		if f.object {
			f.expectKey = true
		} else {
			f.index++
		}
	}
	rootType := reflect.TypeFor[Manifest]()
	for {
		if topDone {
			return "", dec.InputOffset() <= off
		}
		tok, err := dec.Token()
		if err != nil {
			return strings.TrimPrefix(current, "."), false
		}
		if tok == json.Delim('}') || tok == json.Delim(']') {
			stack = stack[:len(stack)-1]
			current = ""
			if len(stack) > 0 {
				current = stack[len(stack)-1].prefix
			}
			valueDone()
			continue
		}
		var path string
		var typ reflect.Type
		if len(stack) == 0 {
			typ = rootType
		} else {
			f := stack[len(stack)-1]
			if f.object && f.expectKey {
				key, _ := tok.(string)
				f.key, f.keyType = memberOf(f.typ, key)
				f.expectKey = false
				current, _ = childOf(f)
				continue
			}
			path, typ = childOf(f)
		}
		current = path
		if dec.InputOffset() >= off {
			return strings.TrimPrefix(path, "."), false
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{typ: deref(typ), object: true, expectKey: true, prefix: path})
		case json.Delim('['):
			stack = append(stack, &frame{typ: deref(typ), prefix: path})
		default:
			valueDone()
		}
	}
}

// memberOf renders the key of an object of type t as a path element and
// returns the type of its value. Struct fields are matched
// case-insensitively like encoding/json and shown with their Go name; map
// keys are quoted in brackets.
func memberOf(t reflect.Type, key string) (string, reflect.Type) {
	if t == nil {
		return "." + key, nil
	}
	switch t.Kind() {
	case reflect.Map:
		return "[" + strconv.Quote(key) + "]", t.Elem()
	case reflect.Struct:
		for i := range t.NumField() {
			field := t.Field(i)
			if field.IsExported() && strings.EqualFold(field.Name, key) {
				return "." + field.Name, field.Type
			}
		}
	}
	return "." + key, nil
}

// deref strips pointer types.
func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
