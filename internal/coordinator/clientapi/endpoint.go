package clientapi

import (
	"net/http"
)

// version selects a path's wire shapes: /api/v2/... or MarbleRun's legacy
// paths.
type version int

const (
	v2 version = iota
	v1
)

// op is one operation of the API: one call of the core, with the reading
// of its request and the writing of its answer for each version. A nil
// read takes no input; a nil encoder for a version leaves that version's
// path unrouted.
type op[In, Out any] struct {
	// read decodes the request; on failure it has answered and returns false.
	read map[version]func(w http.ResponseWriter, r *http.Request) (In, bool)
	// call does the work; its error is answered by the error policy.
	call func(r *http.Request, in In) (Out, error)
	// write answers a successful call in one version's shape.
	write map[version]func(w http.ResponseWriter, out Out)
}

// register routes an operation's versions under path and method.
func register[In, Out any](a *API, path, method string, o op[In, Out]) {
	var h [2]http.HandlerFunc
	for _, v := range []version{v2, v1} {
		if o.write[v] != nil {
			h[v] = serve(a, o, v)
		}
	}
	a.handle(path, method, h[v2], h[v1])
}

// serve is the handler of one version of an operation.
func serve[In, Out any](a *API, o op[In, Out], v version) http.HandlerFunc {
	read, write := o.read[v], o.write[v]
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if read != nil {
			var ok bool
			if in, ok = read(w, r); !ok {
				return
			}
		}
		out, err := o.call(r, in)
		if err != nil {
			a.writeCoreError(w, r, err)
			return
		}
		write(w, out)
	}
}

// both gives the same function to both versions.
func both[F any](f F) map[version]F { return map[version]F{v2: f, v1: f} }

// only gives f to one version.
func only[F any](v version, f F) map[version]F { return map[version]F{v: f} }

// per gives each version its own function.
func per[F any](forV2, forV1 F) map[version]F { return map[version]F{v2: forV2, v1: forV1} }
