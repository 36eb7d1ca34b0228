// Package injector is the marble injector: a mutating admission webhook that
// prepares Pods labelled marblerun/marbletype to run as marbles.
//
// The rules live in Mutate, a pure function from a Pod, the facts of the
// admission request and a Config to a JSON Patch (RFC 6902) built directly
// from the rules: every operation adds something by name, after checking it
// is absent, so applying the webhook to its own output changes nothing and
// the API server may reinvoke it (reinvocationPolicy IfNeeded). Review wraps
// Mutate in the AdmissionReview protocol (v1 and v1beta1), reading the
// request with a one-pass decoder that extracts only the fields the rules
// use. Server serves Review over HTTPS (POST /mutate, GET /healthz,
// /readyz, /metrics) with certificate reloading and Prometheus metrics.
//
// The webhook has no side effects: dry-run requests are answered like any
// other. It never contacts the Coordinator.
//
// Decisions that the sources leave open:
//
//   - A Pod without the marblerun/marbletype label is admitted unchanged.
//   - A marblerun/marbletype (or marblerun/marblecontainer) label with an empty
//     value is denied: the Pod asks for injection but does not say for which
//     marble (or which container).
//   - A marblerun/marblecontainer label naming a container the Pod does not
//     have is denied: the injection it asks for cannot be carried out.
//   - The UUID volume is named UUIDVolumeName for every Pod. The name does not
//     depend on the admission request, so a reinvoked webhook recognises its own
//     volume; a different volume already using that name is a conflict and the
//     Pod is denied rather than given a second volume of the same name.
//   - Only CREATE requests are mutated; other operations are admitted
//     unchanged, since a Pod's containers cannot change after creation.
//   - A missing SGX limit whose key is present in the container's requests gets
//     the requested amount, because Kubernetes requires requests and limits of
//     extended resources to be equal.
//   - An existing toleration that already covers the taint (operator Exists,
//     key equal to the SGX resource or empty, effect NoSchedule or empty)
//     counts as the toleration; none is added then.
//   - The marblerun/resource-injection label disables resources only with the
//     exact value "disabled".
//   - A variable is "already set" when the container's env names it. Values
//     that only an envFrom source would provide are invisible at admission;
//     the injected env entry takes precedence over them.
package injector
