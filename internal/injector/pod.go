package injector

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Pod is the part of a core/v1 Pod that the rules read. It decodes from the
// Pod's JSON and ignores every other field. Its field names are those of
// core/v1; limits and requests stay raw so that the rules see each
// quantity as the request wrote it.
//
// A nil slice or map stands for a field that is absent or null in the JSON;
// the patch then adds the whole field instead of one element.
type Pod struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Metadata   PodMeta `json:"metadata"`
	Spec       PodSpec `json:"spec"`
}

// PodMeta is the part of the Pod's metadata the rules and the logs use.
type PodMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	Labels       map[string]string `json:"labels"`
}

// PodSpec is the part of the Pod's spec the rules read.
type PodSpec struct {
	Containers     []*Container `json:"containers"`
	InitContainers []*Container `json:"initContainers"`
	Volumes        []Volume     `json:"volumes"`
	Tolerations    []Toleration `json:"tolerations"`
}

// Container is the part of a container the rules read.
type Container struct {
	Name         string        `json:"name"`
	Env          []EnvVar      `json:"env"`
	VolumeMounts []VolumeMount `json:"volumeMounts"`
	Resources    *Resources    `json:"resources"`
}

// EnvVar is an environment variable; only its name matters here.
type EnvVar struct {
	Name string `json:"name"`
}

// VolumeMount is a container's volume mount.
type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

// Resources holds a container's limits and requests as raw JSON quantities.
type Resources struct {
	Limits   map[string]json.RawMessage `json:"limits"`
	Requests map[string]json.RawMessage `json:"requests"`
}

// Volume is a Pod volume; only a downward-API source is examined.
type Volume struct {
	Name        string                `json:"name"`
	DownwardAPI *DownwardAPIVolSource `json:"downwardAPI"`
}

// DownwardAPIVolSource is a downward-API volume source.
type DownwardAPIVolSource struct {
	Items []DownwardAPIFile `json:"items"`
}

// DownwardAPIFile is one file of a downward-API volume.
type DownwardAPIFile struct {
	Path     string               `json:"path"`
	FieldRef *ObjectFieldSelector `json:"fieldRef"`
}

// ObjectFieldSelector selects a field of the Pod.
type ObjectFieldSelector struct {
	FieldPath string `json:"fieldPath"`
}

// Toleration is a Pod toleration.
type Toleration struct {
	Key      string `json:"key"`
	Operator string `json:"operator"`
	Effect   string `json:"effect"`
}

// DecodePod decodes a Pod's JSON. It decodes as the API server does: field
// names match case-sensitively, and a duplicate field is an error, so the
// decoded view always describes the object a patch will be applied to.
func DecodePod(data []byte) (*Pod, error) {
	pod, err := decodePod(data)
	if err != nil && !errors.Is(err, errNullContainer) {
		return nil, fmt.Errorf("decoding pod: %w", err)
	}
	return pod, err
}

// decodePod decodes and checks a Pod; a decoding error is not wrapped.
func decodePod(data []byte) (*Pod, error) {
	pod := new(Pod)
	if err := unmarshalStrict(data, pod); err != nil {
		return nil, err
	}
	if err := pod.check(); err != nil {
		return nil, err
	}
	return pod, nil
}

// errNullContainer is the error of a Pod with a null container.
var errNullContainer = errors.New("decoding pod")

// check rejects what decodes but cannot be patched.
func (p *Pod) check() error {
	for i, c := range p.Spec.Containers {
		if c == nil {
			return fmt.Errorf("%w: spec.containers[%d] is null", errNullContainer, i)
		}
	}
	return nil
}
