package keyapi

import (
	"context"
	"fmt"
	"net"
	"strconv"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PortName is the name of the key API port in the Service's
// EndpointSlices.
const PortName = "grpc"

// DefaultServiceName is the Service whose EndpointSlices list the key API
// of every replica.
const DefaultServiceName = "coordinator-key-api"

// Limits of one discovery: EndpointSlices are read in pages of
// slicePageSize, at most maxSlicePages of them, and at most maxPeers
// addresses are kept.
const (
	slicePageSize = 100
	maxSlicePages = 20
	maxPeers      = 256
)

// PeerSource lists the key API addresses (host:port) of the other
// replicas.
type PeerSource interface {
	// Peers lists the replicas ready to hand over the key.
	Peers(ctx context.Context) ([]string, error)
	// Members lists every other replica, ready or not.
	Members(ctx context.Context) ([]Member, error)
}

// Member is one replica's key API address (host:port) and, when the
// EndpointSlice names it, its Pod.
type Member struct {
	Addr string
	Pod  string
}

// EndpointSlices finds peers in the EndpointSlices of a Service: every
// slice labelled kubernetes.io/service-name=Service in Namespace, each
// ready endpoint's first address with the slice's port named PortName.
// Endpoints of the replica itself are left out: those whose address is
// SelfIP (the Pod's IP), whose host:port is one of SelfAddrs, or whose
// target is the Pod SelfPod.
type EndpointSlices struct {
	Client    kubernetes.Interface
	Namespace string
	Service   string
	SelfIP    string
	SelfPod   string
	SelfAddrs []string
	// pageSize replaces slicePageSize when not 0 (tests).
	pageSize int64
}

// Peers lists the other replicas' key API addresses, in the order the API
// server returned them and without duplicates.
func (e EndpointSlices) Peers(ctx context.Context) ([]string, error) {
	ms, err := e.list(ctx, true)
	peers := make([]string, 0, len(ms))
	for _, m := range ms {
		peers = append(peers, m.Addr)
	}
	return peers, err
}

// Members lists every other replica's key API address, ready or not, in
// the order the API server returned them and without duplicates.
func (e EndpointSlices) Members(ctx context.Context) ([]Member, error) {
	return e.list(ctx, false)
}

// list reads the Service's EndpointSlices: its endpoints other than the
// replica itself, only the ready ones if readyOnly.
func (e EndpointSlices) list(ctx context.Context, readyOnly bool) ([]Member, error) {
	opts := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + e.Service, Limit: slicePageSize}
	if e.pageSize > 0 {
		opts.Limit = e.pageSize
	}
	seen := map[string]bool{}
	var peers []Member
	for page := 0; ; page++ {
		if page == maxSlicePages {
			return peers, fmt.Errorf("listing EndpointSlices of Service %s/%s: more than %d pages of %d slices", e.Namespace, e.Service, maxSlicePages, opts.Limit)
		}
		list, err := e.Client.DiscoveryV1().EndpointSlices(e.Namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing EndpointSlices of Service %s/%s: %w", e.Namespace, e.Service, err)
		}
		for i := range list.Items {
			for _, m := range e.slicePeers(&list.Items[i], readyOnly) {
				if !seen[m.Addr] && len(peers) < maxPeers {
					seen[m.Addr] = true
					peers = append(peers, m)
				}
			}
		}
		if list.Continue == "" {
			return peers, nil
		}
		opts.Continue = list.Continue
	}
}

// slicePeers returns the key API addresses of one slice's endpoints
// other than the replica itself, only the ready ones if readyOnly.
func (e EndpointSlices) slicePeers(s *discoveryv1.EndpointSlice, readyOnly bool) []Member {
	port := -1
	for _, p := range s.Ports {
		if p.Name != nil && *p.Name == PortName && p.Port != nil {
			port = int(*p.Port)
		}
	}
	if port <= 0 || port > 65535 {
		return nil
	}
	var out []Member
	for _, ep := range s.Endpoints {
		// An unknown readiness counts as ready, as the API documents.
		if readyOnly && ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		if len(ep.Addresses) == 0 {
			continue
		}
		if e.SelfPod != "" && ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ep.TargetRef.Name == e.SelfPod {
			continue
		}
		ip := ep.Addresses[0]
		if net.ParseIP(ip) == nil || (e.SelfIP != "" && ip == e.SelfIP) {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		if e.isSelf(addr) {
			continue
		}
		m := Member{Addr: addr}
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
			m.Pod = ep.TargetRef.Name
		}
		out = append(out, m)
	}
	return out
}

func (e EndpointSlices) isSelf(addr string) bool {
	for _, a := range e.SelfAddrs {
		if a == addr {
			return true
		}
	}
	return false
}
