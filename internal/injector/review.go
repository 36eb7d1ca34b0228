package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kjson "sigs.k8s.io/json"
)

// AdmissionReview API versions accepted; the response uses the request's.
const (
	AdmissionV1      = "admission.k8s.io/v1"
	AdmissionV1beta1 = "admission.k8s.io/v1beta1"
)

// ReviewResult is the answer to one AdmissionReview request, with the facts
// a caller logs and counts.
type ReviewResult struct {
	// HTTPStatus is 200 for every AdmissionReview response and 400 for a body
	// that is no AdmissionReview request at all.
	HTTPStatus int
	// Body is the response body: an AdmissionReview, or a plain-text error.
	Body []byte
	// ContentType of Body.
	ContentType string
	Decision    Decision
	APIVersion  string
	Request     Request
	// PodName is the Pod's name, or its generateName prefix followed by "*".
	PodName string
}

// Review answers an AdmissionReview request (v1 or v1beta1) with the
// decision of Mutate. It is pure: the same body and configuration always
// give the same result.
func Review(body []byte, cfg Config) ReviewResult {
	var rev reviewBody
	envErr, podErr := decodeReview(body, &rev)
	if envErr != nil {
		return badReview(fmt.Sprintf("the request body is not an AdmissionReview: %v", envErr))
	}
	req := rev.Request
	if msg := checkEnvelope(rev.APIVersion, rev.Kind, req == nil, req != nil && req.UID == ""); msg != "" {
		return badReview(msg)
	}
	pod := req.Object
	if podErr == nil && pod != nil {
		podErr = pod.check()
	}
	return review(rev.APIVersion, &req.AdmissionRequest, pod != nil || podErr != nil, pod, podErr, cfg)
}

// reviewBody is an AdmissionReview whose request object decodes straight
// into the Pod view, so that the body is decoded in one pass.
type reviewBody struct {
	metav1.TypeMeta `json:",inline"`
	Request         *reviewRequest `json:"request"`
}

type reviewRequest struct {
	admissionv1.AdmissionRequest
	// Object shadows AdmissionRequest.Object; nil when absent or null.
	Object *Pod `json:"object"`
}

// objectPath is the path of the request's object in decoding errors.
const objectPath = "request.object"

// decodeReview decodes a request body into rev. Problems inside the
// request's object are returned as podErr, with paths relative to the
// object; any other problem is envErr.
func decodeReview(body []byte, rev *reviewBody) (envErr, podErr error) {
	strict, err := kjson.UnmarshalStrict(body, rev, kjson.DisallowDuplicateFields)
	var envErrs, podErrs []error
	if err != nil {
		if field, ok := typeErrorField(err); ok && inObject(field) {
			podErrs = append(podErrs, describeDecodeError(err, objectPath))
		} else {
			envErrs = append(envErrs, describeDecodeError(err, ""))
		}
	}
	for _, e := range strict {
		var fe kjson.FieldError
		if errors.As(e, &fe) && inObject(fe.FieldPath()) {
			fe.SetFieldPath(strings.TrimPrefix(strings.TrimPrefix(fe.FieldPath(), objectPath), "."))
			podErrs = append(podErrs, fe)
		} else {
			envErrs = append(envErrs, e)
		}
	}
	return errors.Join(envErrs...), errors.Join(podErrs...)
}

func inObject(field string) bool {
	return field == objectPath || strings.HasPrefix(field, objectPath+".")
}

// unmarshalStrict decodes JSON as the API server does: field names match
// case-sensitively, integers stay integers, and a duplicate field is an
// error. Unknown fields are ignored.
func unmarshalStrict(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields)
	if err != nil {
		return describeDecodeError(err, "")
	}
	return errors.Join(strict...)
}

// describeDecodeError words a decoding error for the person who wrote the
// object: a syntax error gives its offset, and a type error names the JSON
// field (relative to base) and the kind of value expected rather than Go
// types.
func describeDecodeError(err error, base string) error {
	if ok, off := kjson.SyntaxErrorOffset(err); ok {
		return fmt.Errorf("%w at offset %d", err, off)
	}
	v := reflect.ValueOf(err)
	field, ok := typeErrorField(err)
	if !ok {
		return err
	}
	e := v.Elem()
	value, typ := e.FieldByName("Value"), e.FieldByName("Type")
	if !value.IsValid() || value.Kind() != reflect.String || !typ.IsValid() || !typ.CanInterface() {
		return err
	}
	t, ok := typ.Interface().(reflect.Type)
	if !ok || t == nil {
		return err
	}
	got, _, _ := strings.Cut(value.String(), " ")
	if base != "" {
		field = strings.TrimPrefix(strings.TrimPrefix(field, base), ".")
	}
	if field == "" {
		return fmt.Errorf("cannot decode %s into %s", got, jsonKindOf(t))
	}
	return fmt.Errorf("%s: cannot decode %s into %s", field, got, jsonKindOf(t))
}

// typeErrorField returns the JSON path of a type error of the decoder. The
// error is of an internal type; its exported fields are read by name.
func typeErrorField(err error) (string, bool) {
	v := reflect.ValueOf(err)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return "", false
	}
	e := v.Elem()
	if !strings.HasSuffix(e.Type().Name(), "UnmarshalTypeError") {
		return "", false
	}
	field := e.FieldByName("Field")
	if !field.IsValid() || field.Kind() != reflect.String {
		return "", false
	}
	return field.String(), true
}

// jsonKindOf names the JSON value that decodes into t.
func jsonKindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a string"
		}
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a bool"
	default:
		return "a number"
	}
}

// checkEnvelope returns why a decoded body is not an AdmissionReview
// request, or "".
func checkEnvelope(apiVersion, kind string, noRequest, noUID bool) string {
	switch {
	case kind != "AdmissionReview" || (apiVersion != AdmissionV1 && apiVersion != AdmissionV1beta1):
		return fmt.Sprintf("want an AdmissionReview of %s or %s, got kind %q of %q",
			AdmissionV1, AdmissionV1beta1, kind, apiVersion)
	case noRequest:
		return "the AdmissionReview has no request"
	case noUID:
		return "the AdmissionReview request has no uid"
	default:
		return ""
	}
}

// review decides on a decoded request.
func review(apiVersion string, ar *admissionv1.AdmissionRequest, present bool, pod *Pod, podErr error, cfg Config) ReviewResult {
	res := ReviewResult{
		APIVersion: apiVersion,
		Request: Request{
			UID:       string(ar.UID),
			Namespace: ar.Namespace,
			Operation: string(ar.Operation),
			DryRun:    ar.DryRun != nil && *ar.DryRun,
		},
		PodName: ar.Name,
	}
	if ar.Kind.Kind != "" && !isPodKind(ar.Kind) {
		res.Decision = denied(ReasonNotPod,
			"the marble injector handles core/v1 Pods only, got %s; check the rules of the webhook configuration", gvkString(ar.Kind))
		return res.respond()
	}
	if ar.Operation != admissionv1.Create {
		res.Decision = unchanged(ReasonNotCreate)
		return res.respond()
	}
	if !present {
		res.Decision = denied(ReasonUndecodablePod, "the CREATE request carries no object")
		return res.respond()
	}
	if podErr != nil {
		res.Decision = denied(ReasonUndecodablePod, "the object cannot be read as a Pod: %v", podErr)
		return res.respond()
	}
	if ar.Kind.Kind == "" && (pod.APIVersion != "v1" || pod.Kind != "Pod") {
		res.Decision = denied(ReasonNotPod,
			"the marble injector handles core/v1 Pods only, got kind %q of %q", pod.Kind, pod.APIVersion)
		return res.respond()
	}
	switch {
	case pod.Metadata.Name != "":
		res.PodName = pod.Metadata.Name
	case pod.Metadata.GenerateName != "":
		res.PodName = pod.Metadata.GenerateName + "*"
	}
	res.Decision = Mutate(pod, res.Request, cfg)
	return res.respond()
}

func isPodKind(k metav1.GroupVersionKind) bool {
	return k.Group == "" && k.Version == "v1" && k.Kind == "Pod"
}

// gvkString names a kind as the API machinery's schema.GroupVersionKind
// does, without a leading slash for the core group.
func gvkString(k metav1.GroupVersionKind) string {
	if k.Group == "" {
		return k.Version + ", Kind=" + k.Kind
	}
	return k.Group + "/" + k.Version + ", Kind=" + k.Kind
}

func badReview(msg string) ReviewResult {
	return ReviewResult{
		HTTPStatus:  http.StatusBadRequest,
		Body:        []byte(msg + "\n"),
		ContentType: "text/plain; charset=utf-8",
		Decision:    Decision{Outcome: Denied, Reason: ReasonUndecodableReview, Message: msg},
	}
}

// respond encodes the AdmissionReview response for the decision.
func (r ReviewResult) respond() ReviewResult {
	d := r.Decision
	resp := &admissionv1.AdmissionResponse{UID: types.UID(r.Request.UID)}
	switch d.Outcome {
	case Denied:
		resp.Result = &metav1.Status{
			Status:  metav1.StatusFailure,
			Message: d.Message,
			Reason:  metav1.StatusReasonBadRequest,
			Code:    http.StatusBadRequest,
		}
	case Mutated:
		pt := admissionv1.PatchTypeJSONPatch
		resp.Allowed, resp.PatchType, resp.Patch = true, &pt, d.Patch
	default:
		resp.Allowed = true
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: r.APIVersion, Kind: "AdmissionReview"},
		Response: resp,
	}
	b, err := json.Marshal(&out)
	if err != nil {
		// Every field is a string, a bool, a number or bytes, so this cannot
		// happen; if it does, the API server gets an error, not a crash.
		r.HTTPStatus = http.StatusInternalServerError
		r.Body = []byte(fmt.Sprintf("encoding the AdmissionReview response: %v\n", err))
		r.ContentType = "text/plain; charset=utf-8"
		return r
	}
	r.HTTPStatus = http.StatusOK
	r.Body = b
	r.ContentType = "application/json"
	return r
}
