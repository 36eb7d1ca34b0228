package injector

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// Request holds the facts of an admission request that the rules use.
type Request struct {
	// UID identifies the admission request (for logs only).
	UID string
	// Namespace is the request's namespace; the Pod's own metadata.namespace
	// is often empty at CREATE.
	Namespace string
	// Operation is CREATE, UPDATE, DELETE or CONNECT.
	Operation string
	// DryRun marks a request whose result is not persisted. The rules have no
	// side effects, so it changes nothing here.
	DryRun bool
}

// Outcome says what the webhook does with a request.
type Outcome int

// Outcomes of Mutate and Review.
const (
	// Unchanged admits the Pod without a patch.
	Unchanged Outcome = iota
	// Mutated admits the Pod with a patch.
	Mutated
	// Denied rejects the request.
	Denied
)

func (o Outcome) String() string {
	switch o {
	case Unchanged:
		return "unchanged"
	case Mutated:
		return "mutated"
	case Denied:
		return "denied"
	default:
		return fmt.Sprintf("Outcome(%d)", int(o))
	}
}

// Reason is a machine-readable cause of a skip or a denial, used as a metric
// label and in logs.
type Reason string

// Reasons for admitting a Pod unchanged.
const (
	ReasonNoMarbleType    Reason = "no_marbletype_label"
	ReasonNotCreate       Reason = "operation_not_create"
	ReasonNoContainers    Reason = "no_containers"
	ReasonAlreadyInjected Reason = "already_injected"
)

// Reasons for denying a request.
const (
	ReasonUndecodableReview      Reason = "undecodable_review"
	ReasonNotPod                 Reason = "not_a_pod"
	ReasonUndecodablePod         Reason = "undecodable_pod"
	ReasonEmptyMarbleType        Reason = "empty_marbletype"
	ReasonEmptyMarbleContainer   Reason = "empty_marblecontainer"
	ReasonMarbleContainerMissing Reason = "marblecontainer_not_found"
	ReasonUUIDVolumeConflict     Reason = "uuid_volume_conflict"
)

// skipReasons lists every reason for Unchanged.
func skipReasons() []Reason {
	return []Reason{ReasonNoMarbleType, ReasonNotCreate, ReasonNoContainers, ReasonAlreadyInjected}
}

// denyReasons lists every reason for Denied.
func denyReasons() []Reason {
	return []Reason{ReasonUndecodableReview, ReasonNotPod, ReasonUndecodablePod, ReasonEmptyMarbleType,
		ReasonEmptyMarbleContainer, ReasonMarbleContainerMissing, ReasonUUIDVolumeConflict}
}

// Decision is the result of the rules for one Pod.
type Decision struct {
	Outcome Outcome
	// Reason is set for Unchanged and Denied.
	Reason Reason
	// Message explains a denial to the user who created the Pod.
	Message string
	// Patch is a JSON Patch document when Outcome is Mutated.
	Patch []byte
	// Ops is the number of operations in Patch.
	Ops int
	// MarbleType is the value of the marblerun/marbletype label.
	MarbleType string
}

func unchanged(r Reason) Decision { return Decision{Outcome: Unchanged, Reason: r} }

func denied(r Reason, format string, args ...any) Decision {
	return Decision{Outcome: Denied, Reason: r, Message: fmt.Sprintf(format, args...)}
}

// Mutate applies the injection rules to pod and returns the decision. It has
// no side effects and never reads anything but its arguments. The patch sets
// things by name: applying Mutate to its own output yields Unchanged.
func Mutate(pod *Pod, req Request, cfg Config) Decision {
	labels := pod.Metadata.Labels
	marbleType, ok := labels[LabelMarbleType]
	if !ok {
		return unchanged(ReasonNoMarbleType)
	}
	if marbleType == "" {
		return denied(ReasonEmptyMarbleType,
			"label %s is empty: set it to the name of the marble in the MarbleRun manifest, or remove it to skip injection",
			LabelMarbleType)
	}
	containers := pod.Spec.Containers
	targets, d := selectContainers(pod)
	if d.Outcome == Denied {
		d.MarbleType = marbleType
		return d
	}
	if len(containers) == 0 {
		d := unchanged(ReasonNoContainers)
		d.MarbleType = marbleType
		return d
	}

	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Metadata.Namespace
	}
	if namespace == "" {
		namespace = defaultNamespace
	}
	dnsNames := strings.ToLower(marbleType + "," +
		marbleType + "." + namespace + "," +
		marbleType + "." + namespace + ".svc." + cfg.ClusterDomain)
	uuidDir := "/" + marbleType + "-uid"
	uuidFile := uuidDir + "/" + UUIDFileName
	env := [...]struct{ name, value string }{
		{marbleenv.CoordinatorAddr, cfg.CoordAddr},
		{marbleenv.MarbleType, marbleType},
		{marbleenv.DNSNames, dnsNames},
		{marbleenv.UUIDFile, uuidFile},
	}
	injectResources := labels[LabelResourceInjection] != ResourceInjectionDisabled
	var limits []Resource
	if injectResources {
		limits = cfg.Limits()
	}

	w := patchWriter{buf: make([]byte, 0, 512+1024*len(targets))}
	mountsAdded := false
	for _, i := range targets {
		c := containers[i]
		base := containerPath(i)

		var missing [len(env)]bool
		n := 0
		for k, e := range env {
			if !hasEnv(c.Env, e.name) {
				missing[k] = true
				n++
			}
		}
		if n > 0 {
			whole := len(c.Env) == 0
			if whole {
				w.add(base + "/env")
				w.raw("[")
			}
			first := true
			for k, e := range env {
				if !missing[k] {
					continue
				}
				if whole {
					if !first {
						w.raw(",")
					}
					first = false
				} else {
					w.add(base + "/env/-")
				}
				w.raw(`{"name":`)
				w.str(e.name)
				w.raw(`,"value":`)
				w.str(e.value)
				w.raw("}")
				if !whole {
					w.end()
				}
			}
			if whole {
				w.raw("]")
				w.end()
			}
		}

		if missing[len(env)-1] && !hasMount(c.VolumeMounts, uuidDir, uuidFile) {
			mountsAdded = true
			if len(c.VolumeMounts) == 0 {
				w.add(base + "/volumeMounts")
				w.raw("[")
				writeUUIDMount(&w, uuidDir)
				w.raw("]")
			} else {
				w.add(base + "/volumeMounts/-")
				writeUUIDMount(&w, uuidDir)
			}
			w.end()
		}

		if injectResources {
			writeLimits(&w, base, c.Resources, limits)
		}
	}

	if mountsAdded {
		switch v := findVolume(pod.Spec.Volumes, UUIDVolumeName); {
		case v == nil:
			if len(pod.Spec.Volumes) == 0 {
				w.add("/spec/volumes")
				w.raw("[")
				writeUUIDVolume(&w)
				w.raw("]")
			} else {
				w.add("/spec/volumes/-")
				writeUUIDVolume(&w)
			}
			w.end()
		case !isUUIDVolume(v):
			d := denied(ReasonUUIDVolumeConflict,
				"the Pod already has a volume named %q that does not expose metadata.uid as %q; rename that volume so the marble's UUID file can be mounted at %s",
				UUIDVolumeName, UUIDFileName, uuidDir)
			d.MarbleType = marbleType
			return d
		}
	}

	if injectResources && !tolerates(pod.Spec.Tolerations, cfg.SGXResource) {
		if len(pod.Spec.Tolerations) == 0 {
			w.add("/spec/tolerations")
			w.raw("[")
			writeToleration(&w, cfg.SGXResource)
			w.raw("]")
		} else {
			w.add("/spec/tolerations/-")
			writeToleration(&w, cfg.SGXResource)
		}
		w.end()
	}

	patch := w.bytes()
	if patch == nil {
		d := unchanged(ReasonAlreadyInjected)
		d.MarbleType = marbleType
		return d
	}
	return Decision{Outcome: Mutated, Patch: patch, Ops: w.ops, MarbleType: marbleType}
}

// selectContainers returns the indexes of the containers to mutate: the one
// named by the marblecontainer label, or all of them.
func selectContainers(pod *Pod) ([]int, Decision) {
	name, ok := pod.Metadata.Labels[LabelMarbleContainer]
	if !ok {
		all := make([]int, len(pod.Spec.Containers))
		for i := range all {
			all[i] = i
		}
		return all, Decision{}
	}
	if name == "" {
		return nil, denied(ReasonEmptyMarbleContainer,
			"label %s is empty: set it to the name of the container to inject, or remove it to inject all containers",
			LabelMarbleContainer)
	}
	for i, c := range pod.Spec.Containers {
		if c.Name == name {
			return []int{i}, Decision{}
		}
	}
	names := make([]string, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	msg := fmt.Sprintf("label %s=%s names no container of the Pod (containers: %s)",
		LabelMarbleContainer, name, strings.Join(names, ", "))
	for _, c := range pod.Spec.InitContainers {
		if c != nil && c.Name == name {
			msg += "; init containers are never injected"
			break
		}
	}
	return nil, Decision{Outcome: Denied, Reason: ReasonMarbleContainerMissing, Message: msg}
}

func hasEnv(env []EnvVar, name string) bool {
	for _, e := range env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// hasMount reports whether a mount already provides the UUID directory or
// the file itself.
func hasMount(mounts []VolumeMount, dir, file string) bool {
	for _, m := range mounts {
		p := m.MountPath
		if p != dir && p != file {
			p = path.Clean(p)
		}
		if p == dir || p == file {
			return true
		}
	}
	return false
}

func findVolume(vols []Volume, name string) *Volume {
	for i := range vols {
		if vols[i].Name == name {
			return &vols[i]
		}
	}
	return nil
}

// isUUIDVolume reports whether v is the downward-API volume the rules add.
func isUUIDVolume(v *Volume) bool {
	if v.DownwardAPI == nil {
		return false
	}
	for _, it := range v.DownwardAPI.Items {
		if it.Path == UUIDFileName && it.FieldRef != nil && it.FieldRef.FieldPath == uuidFieldPath {
			return true
		}
	}
	return false
}

// tolerates reports whether the tolerations already cover a NoSchedule taint
// with the given key.
func tolerates(tols []Toleration, key string) bool {
	for _, t := range tols {
		if t.Operator == "Exists" && (t.Key == key || t.Key == "") &&
			(t.Effect == "" || t.Effect == "NoSchedule") {
			return true
		}
	}
	return false
}

func writeUUIDMount(w *patchWriter, dir string) {
	w.raw(`{"name":"` + UUIDVolumeName + `","mountPath":`)
	w.str(dir)
	w.raw(`,"readOnly":true}`)
}

func writeUUIDVolume(w *patchWriter) {
	w.raw(`{"name":"` + UUIDVolumeName + `","downwardAPI":{"items":[{"path":"` +
		UUIDFileName + `","fieldRef":{"fieldPath":"` + uuidFieldPath + `"}}]}}`)
}

func writeToleration(w *patchWriter, key string) {
	w.raw(`{"key":`)
	w.str(key)
	w.raw(`,"operator":"Exists","effect":"NoSchedule"}`)
}

// writeLimits adds the limits the container lacks. A key present only in the
// requests gets the requested quantity.
func writeLimits(w *patchWriter, base string, res *Resources, limits []Resource) {
	var existing, req map[string]json.RawMessage
	if res != nil {
		existing, req = res.Limits, res.Requests
	}
	whole := existing == nil
	first := true
	for _, l := range limits {
		if _, ok := existing[l.Name]; ok {
			continue
		}
		if whole {
			if first {
				if res == nil {
					w.add(base + "/resources")
					w.raw(`{"limits":{`)
				} else {
					w.add(base + "/resources/limits")
					w.raw("{")
				}
			} else {
				w.raw(",")
			}
			first = false
			w.str(l.Name)
			w.raw(":")
		} else {
			w.add(base+"/resources/limits", l.Name)
		}
		if q := req[l.Name]; isQuantity(q) {
			w.rawBytes(q)
		} else {
			w.str(l.Quantity)
		}
		if !whole {
			w.end()
		}
	}
	if whole && !first {
		if res == nil {
			w.raw("}}")
		} else {
			w.raw("}")
		}
		w.end()
	}
}

// isQuantity reports whether raw JSON is a string or a number, the two forms
// a resource quantity takes.
func isQuantity(q json.RawMessage) bool {
	if len(q) == 0 {
		return false
	}
	switch c := q[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return true
	default:
		return false
	}
}
