package injector

import (
	"encoding/base64"
	"fmt"
	"net/http"
)

// AdmissionReview API versions accepted; the response uses the request's.
const (
	AdmissionV1      = "admission.k8s.io/v1"
	AdmissionV1beta1 = "admission.k8s.io/v1beta1"
)

type groupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func (g groupVersionKind) String() string {
	if g.Group == "" {
		return g.Version + ", Kind=" + g.Kind
	}
	return g.Group + "/" + g.Version + ", Kind=" + g.Kind
}

// requestMeta is what Review reads from a request besides the object.
type requestMeta struct {
	UID       string           `json:"uid"`
	Kind      groupVersionKind `json:"kind"`
	Name      string           `json:"name"`
	Namespace string           `json:"namespace"`
	Operation string           `json:"operation"`
	DryRun    *bool            `json:"dryRun"`
}

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
	d, err := decodeReview(body)
	if err != nil {
		return badReview(fmt.Sprintf("the request body is not an AdmissionReview: %v", err))
	}
	if d.envErr != nil {
		return badReview(fmt.Sprintf("the request body is not an AdmissionReview: %v", d.envErr))
	}
	if msg := checkEnvelope(d.apiVersion, d.kind, !d.hasRequest, d.meta.UID == ""); msg != "" {
		return badReview(msg)
	}
	podErr := d.podErr
	if podErr == nil && d.pod != nil {
		podErr = d.pod.check()
	}
	return review(d.apiVersion, d.meta, d.hasObject, d.pod, podErr, cfg)
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
func review(apiVersion string, ar requestMeta, present bool, pod *Pod, podErr error, cfg Config) ReviewResult {
	res := ReviewResult{
		APIVersion: apiVersion,
		Request: Request{
			UID:       ar.UID,
			Namespace: ar.Namespace,
			Operation: ar.Operation,
			DryRun:    ar.DryRun != nil && *ar.DryRun,
		},
		PodName: ar.Name,
	}
	if ar.Kind.Kind != "" && !isPodKind(ar.Kind) {
		res.Decision = denied(ReasonNotPod,
			"the marble injector handles core/v1 Pods only, got %s; check the rules of the webhook configuration", ar.Kind)
		return res.respond()
	}
	if ar.Operation != "CREATE" {
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

func isPodKind(k groupVersionKind) bool {
	return k.Group == "" && k.Version == "v1" && k.Kind == "Pod"
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
	b := make([]byte, 0, 256+len(r.APIVersion)+len(r.Request.UID)+base64.StdEncoding.EncodedLen(len(d.Patch))+2*len(d.Message))
	b = append(b, `{"apiVersion":`...)
	b = appendString(b, r.APIVersion)
	b = append(b, `,"kind":"AdmissionReview","response":{"uid":`...)
	b = appendString(b, r.Request.UID)
	switch d.Outcome {
	case Denied:
		b = append(b, `,"allowed":false,"status":{"metadata":{},"status":"Failure","message":`...)
		b = appendString(b, d.Message)
		b = append(b, `,"reason":"BadRequest","code":400}`...)
	case Mutated:
		b = append(b, `,"allowed":true,"patchType":"JSONPatch","patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, d.Patch)
		b = append(b, '"')
	default:
		b = append(b, `,"allowed":true`...)
	}
	b = append(b, "}}"...)
	r.HTTPStatus = http.StatusOK
	r.Body = b
	r.ContentType = "application/json"
	return r
}
