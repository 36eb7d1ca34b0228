package injector

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// patchWriter builds a JSON Patch document of "add" operations directly as
// bytes. Every value it writes is known to the rules, so no reflection is
// needed.
type patchWriter struct {
	buf []byte
	ops int
}

// add starts an "add" operation at the pointer made of prefix followed by the
// given reference tokens; the caller writes the value and calls end.
func (w *patchWriter) add(prefix string, tokens ...string) {
	if w.ops == 0 {
		w.buf = append(w.buf, '[')
	} else {
		w.buf = append(w.buf, ',')
	}
	w.ops++
	w.buf = append(w.buf, `{"op":"add","path":"`...)
	w.buf = appendStringContent(w.buf, prefix)
	for _, t := range tokens {
		w.buf = append(w.buf, '/')
		w.buf = appendStringContent(w.buf, escapePointerToken(t))
	}
	w.buf = append(w.buf, `","value":`...)
}

func (w *patchWriter) end() { w.buf = append(w.buf, '}') }

// bytes returns the finished document, or nil when there are no operations.
func (w *patchWriter) bytes() []byte {
	if w.ops == 0 {
		return nil
	}
	return append(w.buf, ']')
}

func (w *patchWriter) raw(s string)      { w.buf = append(w.buf, s...) }
func (w *patchWriter) str(s string)      { w.buf = appendString(w.buf, s) }
func (w *patchWriter) rawBytes(b []byte) { w.buf = append(w.buf, b...) }

// escapePointerToken escapes a JSON Pointer reference token (RFC 6901):
// "~" becomes "~0" and "/" becomes "~1".
func escapePointerToken(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	b := make([]byte, 0, len(s)+4)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~':
			b = append(b, '~', '0')
		case '/':
			b = append(b, '~', '1')
		default:
			b = append(b, s[i])
		}
	}
	return string(b)
}

// containerPath returns the pointer of spec.containers[i].
func containerPath(i int) string {
	return "/spec/containers/" + strconv.Itoa(i)
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendStringContent(dst, s)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendStringContent appends s escaped for the inside of a JSON string.
// Invalid UTF-8 becomes U+FFFD, as encoding/json does.
func appendStringContent(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}
