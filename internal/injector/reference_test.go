package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	kjson "sigs.k8s.io/json"
)

// The reference decoder: the API machinery's JSON decoder in strict mode,
// reading the same types. The hand-written parser must agree with it.

type refReview struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Request    *refRequest `json:"request"`
}

type refRequest struct {
	requestMeta
	Object json.RawMessage `json:"object"`
}

func refUnmarshal(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func refDecodePod(data []byte) (*Pod, error) {
	var pod Pod
	if err := refUnmarshal(data, &pod); err != nil {
		return nil, err
	}
	if err := pod.check(); err != nil {
		return nil, err
	}
	return &pod, nil
}

// refReviewResult is Review with the reference decoder.
func refReviewResult(body []byte, cfg Config) ReviewResult {
	var rev refReview
	if err := refUnmarshal(body, &rev); err != nil {
		return badReview(fmt.Sprintf("the request body is not an AdmissionReview: %v", err))
	}
	if msg := checkEnvelope(rev.APIVersion, rev.Kind, rev.Request == nil, rev.Request != nil && rev.Request.UID == ""); msg != "" {
		return badReview(msg)
	}
	req := rev.Request
	present := len(req.Object) > 0 && string(req.Object) != "null"
	var pod *Pod
	var podErr error
	if present {
		pod, podErr = refDecodePod(req.Object)
	}
	return review(rev.APIVersion, req.requestMeta, present, pod, podErr, cfg)
}

// sameResult compares two results; the wording of decoding errors may
// differ.
func sameResult(a, b ReviewResult) error {
	if a.HTTPStatus != b.HTTPStatus || a.Decision.Outcome != b.Decision.Outcome || a.Decision.Reason != b.Decision.Reason {
		return fmt.Errorf("HTTP %d %v %s (%s) vs HTTP %d %v %s (%s)",
			a.HTTPStatus, a.Decision.Outcome, a.Decision.Reason, a.Decision.Message,
			b.HTTPStatus, b.Decision.Outcome, b.Decision.Reason, b.Decision.Message)
	}
	if a.HTTPStatus != http.StatusOK || a.Decision.Reason == ReasonUndecodablePod {
		return nil
	}
	if string(a.Body) != string(b.Body) {
		return fmt.Errorf("bodies differ:\n%s\n%s", a.Body, b.Body)
	}
	return nil
}

func TestReviewMatchesReference(t *testing.T) {
	for _, c := range reviewCases() {
		body := c.encodeReview(t, nil)
		if err := sameResult(Review(body, c.config()), refReviewResult(body, c.config())); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// FuzzDecodeDifferential holds the parser to the reference decoder: the
// same bodies fail, and the same Pods come out.
func FuzzDecodeDifferential(f *testing.F) {
	for _, c := range reviewCases() {
		f.Add(c.encodeReview(f, nil))
		if c.body == "" {
			f.Add(c.objectJSON(f))
		}
	}
	for _, s := range []string{
		`{"metadata":{"labels":{"a":null,"b":"\ud800\u0041","c":"\xff"}},"spec":{"containers":[{"name":"\u00e9","env":[null,{"name":1}]}]}}`,
		`{"spec":{"containers":[{"resources":{"limits":{"x":null,"y":-1.5e3,"z":{"a":[]}}}}],"volumes":[{"downwardAPI":{"items":[{"fieldRef":null}]}}]}}`,
		`{"spec":{"tolerations":[{"key":"k","key":"k"}]}}`,
		`[1, 2.0e-3, true, false, null, "x"]`,
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":"\u12"}`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `{} x`, ` `,
	} {
		f.Add([]byte(s))
	}
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, data []byte) {
		got, gerr := DecodePod(data)
		want, werr := refDecodePod(data)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("DecodePod error %v, reference error %v", gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodePod\n%#v\nreference\n%#v", got, want)
		}
		if err := sameResult(Review(data, cfg), refReviewResult(data, cfg)); err != nil {
			t.Fatal(err)
		}
	})
}
