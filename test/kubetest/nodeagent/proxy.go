package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// proxy makes Services reachable at their cluster IPs, in the machine's
// network namespace and in every Pod's, and keeps the hosts files that map
// Service names to cluster IPs.
type proxy struct {
	a  *Agent
	rr atomic.Uint64

	mu        sync.Mutex
	closed    bool
	services  map[string]*corev1.Service   // "ns/name"
	netnss    map[string]map[int]bool      // Pod network namespaces ("" is the machine's) -> ports their containers declare
	listeners map[listenerKey]net.Listener // open listeners
	hostsNS   map[string]bool              // namespaces with a hosts file
	conns     map[net.Conn]struct{}        // forwarded connections
	wg        sync.WaitGroup
}

type listenerKey struct {
	netns   string
	service string // ns/name
	addr    string // cluster IP:port
}

func newProxy(a *Agent) *proxy {
	return &proxy{
		a:         a,
		services:  map[string]*corev1.Service{},
		netnss:    map[string]map[int]bool{"": nil},
		listeners: map[listenerKey]net.Listener{},
		hostsNS:   map[string]bool{},
		conns:     map[net.Conn]struct{}{},
	}
}

func serviceKey(s *corev1.Service) string { return s.Namespace + "/" + s.Name }

// addrs returns the cluster IP:port addresses a Service is served at.
func addrs(s *corev1.Service) []string {
	ip := s.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return nil
	}
	var out []string
	for _, p := range s.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, net.JoinHostPort(ip, strconv.Itoa(int(p.Port))))
		}
	}
	return out
}

func (x *proxy) serviceChanged(s *corev1.Service) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return
	}
	key := serviceKey(s)
	x.services[key] = s.DeepCopy()
	want := addrs(s)
	for lk, l := range x.listeners {
		if lk.service == key && !slices.Contains(want, lk.addr) {
			l.Close()
			delete(x.listeners, lk)
		}
	}
	for netns := range x.netnss {
		for _, addr := range want {
			x.listenLocked(netns, key, addr)
		}
	}
	x.writeHostsLocked()
}

func (x *proxy) serviceDeleted(s *corev1.Service) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := serviceKey(s)
	delete(x.services, key)
	for lk, l := range x.listeners {
		if lk.service == key {
			l.Close()
			delete(x.listeners, lk)
		}
	}
	x.writeHostsLocked()
}

// addNetNS serves every Service inside a new Pod's network namespace,
// except on the ports its containers declare: a socket of the agent on
// such a port would keep the container from listening on it (kube-proxy
// rewrites packets instead, which needs netfilter). It also makes sure the
// Pod's namespace has a hosts file.
func (x *proxy) addNetNS(netns, namespace string, ownPorts map[int]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return
	}
	x.netnss[netns] = ownPorts
	x.hostsNS[namespace] = true
	for key, s := range x.services {
		for _, addr := range addrs(s) {
			x.listenLocked(netns, key, addr)
		}
	}
	x.writeHostsLocked()
}

func (x *proxy) removeNetNS(netns string) {
	if netns == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.netnss, netns)
	for lk, l := range x.listeners {
		if lk.netns == netns {
			l.Close()
			delete(x.listeners, lk)
		}
	}
}

func (x *proxy) listenLocked(netns, service, addr string) {
	lk := listenerKey{netns: netns, service: service, addr: addr}
	if _, ok := x.listeners[lk]; ok {
		return
	}
	_, portStr, _ := net.SplitHostPort(addr)
	if port, _ := strconv.Atoi(portStr); x.netnss[netns][port] {
		return
	}
	l, err := listenIn(netns, addr)
	if err != nil {
		x.a.cfg.Timeline.Addf("node agent: serving Service %s at %s: %v", service, addr, err)
		return
	}
	x.listeners[lk] = l
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		x.accept(l, service, addr)
	}()
}

func (x *proxy) accept(l net.Listener, service, addr string) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		x.mu.Lock()
		if x.closed {
			x.mu.Unlock()
			c.Close()
			return
		}
		x.conns[c] = struct{}{}
		x.wg.Add(1)
		x.mu.Unlock()
		go func() {
			defer x.wg.Done()
			x.forward(c, service, addr)
			x.mu.Lock()
			delete(x.conns, c)
			x.mu.Unlock()
		}()
	}
}

// forward connects c to a Ready Pod of the Service, round robin. Without
// one, c is closed at once, as kube-proxy rejects it.
func (x *proxy) forward(c net.Conn, service, addr string) {
	defer c.Close()
	x.mu.Lock()
	s := x.services[service]
	x.mu.Unlock()
	if s == nil {
		return
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	var sp *corev1.ServicePort
	for i := range s.Spec.Ports {
		if int(s.Spec.Ports[i].Port) == port {
			sp = &s.Spec.Ports[i]
		}
	}
	if sp == nil {
		return
	}
	netns, target, ok := x.backend(s, sp)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(x.a.ctx, 5*time.Second)
	b, err := dialIn(ctx, netns, target)
	cancel()
	if err != nil {
		return
	}
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		b.Close()
		return
	}
	x.conns[b] = struct{}{}
	x.mu.Unlock()
	defer func() {
		b.Close()
		x.mu.Lock()
		delete(x.conns, b)
		x.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}

// backend picks where a connection to a Service port goes: the network
// namespace and address of a Ready Pod of the Service, round robin, or the
// API server for the `kubernetes` Service when the agent knows it.
func (x *proxy) backend(s *corev1.Service, sp *corev1.ServicePort) (netns, addr string, ok bool) {
	if serviceKey(s) == kubernetesService && x.a.cfg.APIServer != "" {
		return "", x.a.cfg.APIServer, true
	}
	pods := x.a.readyPods(s.Namespace, s.Spec.Selector)
	if len(pods) == 0 {
		return "", "", false
	}
	slices.SortFunc(pods, func(a, b *podRun) int { return strings.Compare(string(a.uid), string(b.uid)) })
	p := pods[int(x.rr.Add(1)%uint64(len(pods)))]
	target := int(sp.Port)
	if sp.TargetPort.IntVal != 0 || sp.TargetPort.StrVal != "" {
		found := false
		for _, ctr := range p.currentPod().Spec.Containers {
			if n, ok := resolvePort(sp.TargetPort, ctr); ok {
				target, found = n, true
				break
			}
		}
		if !found {
			return "", "", false
		}
	}
	return p.netNS(), net.JoinHostPort("127.0.0.1", strconv.Itoa(target)), true
}

// kubernetesService is the Service through which Pods reach the API server.
const kubernetesService = "default/kubernetes"

// apiServerEnv is what the kubelet tells every container about the
// `kubernetes` Service: its cluster IP and HTTPS port. It fails while the
// Service is not known yet.
func (x *proxy) apiServerEnv() (host, port string, err error) {
	x.mu.Lock()
	s := x.services[kubernetesService]
	x.mu.Unlock()
	if s == nil || s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
		return "", "", fmt.Errorf("the Service %s has no cluster IP and port yet", kubernetesService)
	}
	p := s.Spec.Ports[0]
	for _, sp := range s.Spec.Ports {
		if sp.Name == "https" {
			p = sp
		}
	}
	return s.Spec.ClusterIP, strconv.Itoa(int(p.Port)), nil
}

// hostsFile is the /etc/hosts of containers in namespace.
func (x *proxy) hostsFile(namespace string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.hostsNS[namespace] {
		x.hostsNS[namespace] = true
		x.writeHostsLocked()
	}
	return filepath.Join(x.a.cfg.Dir, "hosts", namespace)
}

// writeHostsLocked rewrites every namespace's hosts file in place (they
// are bind-mounted, so the file must stay the same).
func (x *proxy) writeHostsLocked() {
	keys := make([]string, 0, len(x.services))
	for k := range x.services {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	domain := x.a.cfg.ClusterDomain
	for ns := range x.hostsNS {
		var b strings.Builder
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
		for _, k := range keys {
			s := x.services[k]
			ip := s.Spec.ClusterIP
			if ip == "" || ip == corev1.ClusterIPNone {
				continue
			}
			names := []string{
				fmt.Sprintf("%s.%s.svc.%s", s.Name, s.Namespace, domain),
				fmt.Sprintf("%s.%s.svc", s.Name, s.Namespace),
				fmt.Sprintf("%s.%s", s.Name, s.Namespace),
			}
			if s.Namespace == ns {
				names = append(names, s.Name)
			}
			fmt.Fprintf(&b, "%s\t%s\n", ip, strings.Join(names, " "))
		}
		path := filepath.Join(x.a.cfg.Dir, "hosts", ns)
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			x.a.cfg.Timeline.Addf("node agent: writing %s: %v", path, err)
		}
	}
}

// close stops serving and ends every forwarded connection.
func (x *proxy) close() {
	x.mu.Lock()
	x.closed = true
	for lk, l := range x.listeners {
		l.Close()
		delete(x.listeners, lk)
	}
	for c := range x.conns {
		c.Close()
	}
	x.mu.Unlock()
	x.wg.Wait()
}
