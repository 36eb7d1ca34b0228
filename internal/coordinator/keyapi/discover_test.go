package keyapi

import (
	"fmt"
	"os"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/marblemesh/marblemesh/test/kubetest"
)

var kubeShared kubetest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	kubeShared.Stop()
	os.Exit(code)
}

type endpoint struct {
	ip    string
	ready *bool
	pod   string
}

func createSlice(t *testing.T, env *kubetest.Env, ns, name, service, portName string, port int32, eps ...endpoint) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("metrics"), Port: ptr.To(int32(9))}, {Name: ptr.To(portName), Port: ptr.To(port)}},
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: e.pod, Namespace: ns}
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	if _, err := env.Clientset.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createNamespace(t *testing.T, env *kubetest.Env, name string) {
	t.Helper()
	if _, err := env.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestEndpointSlicesPeers(t *testing.T) {
	env := kubeShared.Env(t)
	ns := "keyapi-discovery"
	createNamespace(t, env, ns)
	yes, no := ptr.To(true), ptr.To(false)
	createSlice(t, env, ns, "a", DefaultServiceName, PortName, 5433,
		endpoint{ip: "10.0.0.1", ready: yes, pod: "c-0"},
		endpoint{ip: "10.0.0.2", ready: no, pod: "c-1"}, // not ready
		endpoint{ip: "10.0.0.3", pod: "c-2"},            // readiness unknown: ready
		endpoint{ip: "10.0.0.9", ready: yes, pod: "self"})
	createSlice(t, env, ns, "b", DefaultServiceName, PortName, 6000,
		endpoint{ip: "10.0.0.4", ready: yes},
		endpoint{ip: "10.0.0.5", ready: yes}, // the replica's own IP
		endpoint{ip: "10.0.0.6", ready: yes}) // the replica's own listener
	createSlice(t, env, ns, "c", DefaultServiceName, "other", 7000, endpoint{ip: "10.0.0.7", ready: yes}) // no grpc port
	createSlice(t, env, ns, "d", "another-service", PortName, 5433, endpoint{ip: "10.0.0.8", ready: yes})
	for i := range 5 {
		createSlice(t, env, ns, fmt.Sprintf("e%d", i), DefaultServiceName, PortName, 5433, endpoint{ip: fmt.Sprintf("10.0.1.%d", i), ready: yes})
	}

	src := EndpointSlices{Client: env.Clientset, Namespace: ns, Service: DefaultServiceName,
		SelfIP: "10.0.0.5", SelfPod: "self", SelfAddrs: []string{"10.0.0.6:6000"}, pageSize: 2}
	got, err := src.Peers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:5433", "10.0.0.3:5433", "10.0.0.4:6000"}
	for i := range 5 {
		want = append(want, fmt.Sprintf("10.0.1.%d:5433", i))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("peers %v, want %v", got, want)
	}

	// Members adds the endpoint that is not ready, and names Pods.
	members, err := src.Members(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != len(want)+1 || !slices.Contains(members, Member{Addr: "10.0.0.2:5433", Pod: "c-1"}) ||
		!slices.Contains(members, Member{Addr: "10.0.0.1:5433", Pod: "c-0"}) || !slices.Contains(members, Member{Addr: "10.0.0.4:6000"}) {
		t.Fatalf("members %+v, want the peers %v and 10.0.0.2:5433 (c-1)", members, want)
	}

	// Pages of one slice each read every slice too.
	src.pageSize = 1
	got, err = src.Peers(t.Context())
	if err != nil {
		t.Fatalf("pages of 1: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("pages of 1: %d peers, want %d", len(got), len(want))
	}

	// Another namespace sees none.
	createNamespace(t, env, "keyapi-empty")
	src.Namespace = "keyapi-empty"
	if got, err := src.Peers(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("empty namespace: %v, %v", got, err)
	}
}
