package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	kjson "sigs.k8s.io/json"
)

// FuzzHandle feeds arbitrary request bodies to Review. Every body gets
// either an HTTP 400 with a message, or an AdmissionReview response for the
// request's UID; a patch in it applies to the request's object, and
// reviewing the patched object changes nothing more.
func FuzzHandle(f *testing.F) {
	for _, c := range reviewCases() {
		f.Add(c.encodeReview(f, nil))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"metadata":{"labels":{"marblerun/marbletype":"a\"b\\c\u2028"}},"spec":{"containers":[{"name":"a","env":null,"resources":{"limits":null,"requests":{"sgx.intel.com/epc":"1Mi"}}}],"tolerations":[{"operator":"Exists"}]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"metadata":{"labels":{"marblerun/marbletype":"t"}},"spec":{"containers":[null]}}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, body []byte) {
		res := Review(body, cfg)
		if res.HTTPStatus != http.StatusOK {
			if res.HTTPStatus != http.StatusBadRequest || len(res.Body) == 0 || res.Decision.Outcome != Denied {
				t.Fatalf("HTTP %d %q, outcome %v", res.HTTPStatus, res.Body, res.Decision.Outcome)
			}
			return
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(res.Body, &out); err != nil {
			t.Fatalf("response is not an AdmissionReview: %v\n%s", err, res.Body)
		}
		// The fields Review reads, decoded the way the API machinery does.
		var in struct {
			APIVersion string `json:"apiVersion"`
			Request    struct {
				UID    string          `json:"uid"`
				Object json.RawMessage `json:"object"`
			} `json:"request"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
			t.Fatalf("accepted a body the API machinery rejects: %v", err)
		}
		if out.Response == nil || string(out.Response.UID) != in.Request.UID || out.APIVersion != in.APIVersion {
			t.Fatalf("response %s does not answer %s", res.Body, in.Request.UID)
		}
		r := out.Response
		switch res.Decision.Outcome {
		case Denied:
			if r.Allowed || r.Result == nil || r.Result.Message == "" {
				t.Fatalf("denial without a message: %s", res.Body)
			}
		case Unchanged:
			if !r.Allowed || r.Patch != nil {
				t.Fatalf("unchanged with a patch: %s", res.Body)
			}
		case Mutated:
			if !r.Allowed || !bytes.Equal(r.Patch, res.Decision.Patch) {
				t.Fatalf("mutation response %s", res.Body)
			}
			patched := applyPatch(t, in.Request.Object, r.Patch)
			b, err := replaceObject(body, patched)
			if err != nil {
				t.Fatal(err)
			}
			if second := Review(b, cfg); second.Decision.Outcome != Unchanged {
				t.Fatalf("second review of the patched object: %v %s %s\npatch %s",
					second.Decision.Outcome, second.Decision.Reason, second.Decision.Patch, r.Patch)
			}
		}
	})
}

// replaceObject returns the review body with request.object replaced and
// every other field kept as it was.
func replaceObject(body, object []byte) ([]byte, error) {
	var rev map[string]json.RawMessage
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &rev); err != nil {
		return nil, err
	}
	var req map[string]json.RawMessage
	if err := kjson.UnmarshalCaseSensitivePreserveInts(rev["request"], &req); err != nil {
		return nil, err
	}
	req["object"] = object
	r, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	rev["request"] = r
	return json.Marshal(rev)
}
