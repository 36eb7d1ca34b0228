package coordinator_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/keyapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// keyAPICluster is a namespace on a real API server where replicas share
// one state and find each other through EndpointSlices of the key API
// Service, one slice per replica. EndpointSlices refuse loopback
// addresses, so each replica is given an address of TEST-NET-1
// (192.0.2.0/24) as its Pod IP, its slice lists that address with the
// port of its loopback key API listener, and every replica dials such
// addresses on loopback.
type keyAPICluster struct {
	env    *kubetest.Env
	ns     string
	kube   coordtest.Option
	nextIP int
}

// loopbackDial connects to the port of addr on 127.0.0.1.
func loopbackDial(ctx context.Context, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
}

func newKeyAPICluster(t *testing.T) *keyAPICluster {
	t.Helper()
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	return &keyAPICluster{env: env, ns: ns, kube: coordtest.WithKubeStore(env.Kubeconfig, ns, "replicated-state")}
}

// start starts a replica that seals with sealer (its node's key), asks
// peers every 100 ms while it needs a key, and has the next Pod IP.
func (k *keyAPICluster) start(t *testing.T, sealer seal.Sealer, opts ...coordtest.Option) *coordtest.Coordinator {
	t.Helper()
	k.nextIP++
	ip := "192.0.2." + strconv.Itoa(k.nextIP)
	replica := func(c *coordinator.Config) {
		c.KeyAPIInterval, c.KeyAPIDial, c.PodIP = 100*time.Millisecond, loopbackDial, ip
	}
	return coordtest.Start(t, append([]coordtest.Option{k.kube, coordtest.WithSealer(sealer), replica}, opts...)...)
}

// publish lists c's key API in the Service under slice name.
func (k *keyAPICluster) publish(t *testing.T, name string, c *coordtest.Coordinator) {
	t.Helper()
	_, port, err := net.SplitHostPort(c.Server.KeyAPIAddr())
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: keyapi.DefaultServiceName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(keyapi.PortName), Port: ptr.To(int32(p))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{c.Config.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	slices := k.env.Clientset.DiscoveryV1().EndpointSlices(k.ns)
	if err := slices.Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := slices.Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// withdraw removes slice name.
func (k *keyAPICluster) withdraw(t *testing.T, name string) {
	t.Helper()
	if err := k.env.Clientset.DiscoveryV1().EndpointSlices(k.ns).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// secrets returns the Data of every Secret in the namespace by name.
func (k *keyAPICluster) secrets(t *testing.T) map[string]map[string][]byte {
	t.Helper()
	list, err := k.env.Clientset.CoreV1().Secrets(k.ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]byte{}
	for _, s := range list.Items {
		out[s.Name] = s.Data
	}
	return out
}

// rollBack rewrites the namespace's Secrets to snapshot, as someone with
// write access to the Kubernetes API could.
func (k *keyAPICluster) rollBack(t *testing.T, snapshot map[string]map[string][]byte) {
	t.Helper()
	api := k.env.Clientset.CoreV1().Secrets(k.ns)
	for name := range k.secrets(t) {
		if err := api.Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range snapshot {
		if _, err := api.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func userKeyThrough(t *testing.T, c *coordtest.Coordinator, admin *testsupport.User) (int, string) {
	t.Helper()
	r := c.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey", nil, admin.TLS)
	return r.Code, string(r.Data)
}

// TestKeyAPINewNodeJoinsThroughPeer: a replica on a new node (another seal
// key) waits for a key, takes it from a live peer over the key API and
// serves the shared state; later it restarts on its own entry, and a
// replica whose only peer is down waits until the peer returns.
func TestKeyAPINewNodeJoinsThroughPeer(t *testing.T) {
	k := newKeyAPICluster(t)
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	nodeA, nodeB, nodeC := coordtest.NewAESSealer(t), coordtest.NewAESSealer(t), coordtest.NewAESSealer(t)

	a := k.start(t, nodeA)
	a.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, nil)))
	key := []byte("0123456789abcdef")
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, key), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("setting secrets through A: %d %s", r.Code, r.Message)
	}
	_, want := userKeyThrough(t, a, admin)

	// B on a new node, while A is not listed yet: it waits for a key and
	// does not serve the state.
	b := k.start(t, nodeB)
	time.Sleep(300 * time.Millisecond)
	if !b.Core().NeedsKey() {
		t.Fatal("a replica on a new node does not wait for a key")
	}
	if got := statusCode(t, b); got == 3 {
		t.Fatal("a replica waiting for a key serves the state")
	}
	// Once A is listed, B takes the key from it.
	k.publish(t, "a", a)
	k.publish(t, "b", b)
	eventually(t, "B takes the key from A", func() bool { return !b.Core().NeedsKey() })
	if got := statusCode(t, b); got != 3 {
		t.Fatalf("B after joining: status %d", got)
	}
	if code, got := userKeyThrough(t, b, admin); code != http.StatusOK || got != want {
		t.Fatalf("B serves the secret: %d %s, want %s", code, got, want)
	}
	activateApp(t, b, uuidA)

	// A goes away; B restarts on its own entry, without a peer.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	k.withdraw(t, "a")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	k.withdraw(t, "b")
	b = k.start(t, nodeB)
	if b.Core().NeedsKey() || statusCode(t, b) != 3 {
		t.Fatal("B does not restart on its own entry")
	}

	// C on a new node while its only peer is not listed: it keeps waiting,
	// and joins once B is back in the Service.
	c := k.start(t, nodeC)
	time.Sleep(time.Second)
	if !c.Core().NeedsKey() {
		t.Fatal("C got a key without a peer")
	}
	k.publish(t, "b", b)
	eventually(t, "C takes the key from B once B is listed", func() bool { return !c.Core().NeedsKey() })
	if code, got := userKeyThrough(t, c, admin); code != http.StatusOK || got != want {
		t.Fatalf("C serves the secret: %d %s", code, got)
	}
}

// TestKeyAPIRecoveryThroughAnyReplica: when every replica runs on a new
// node, the owner recovers through one of them and the others take the key
// from it.
func TestKeyAPIRecoveryThroughAnyReplica(t *testing.T) {
	k := newKeyAPICluster(t)
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owner := testsupport.NewRecoveryKey(t)
	a := k.start(t, coordtest.NewAESSealer(t))
	encrypted := a.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"owner": owner})))
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	_, want := userKeyThrough(t, a, admin)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	share := owner.Decrypt(t, encrypted["owner"])

	replicas := []*coordtest.Coordinator{k.start(t, coordtest.NewAESSealer(t)), k.start(t, coordtest.NewAESSealer(t)), k.start(t, coordtest.NewAESSealer(t))}
	for i, r := range replicas {
		k.publish(t, "replica-"+strconv.Itoa(i), r)
	}
	time.Sleep(300 * time.Millisecond)
	for i, r := range replicas {
		if got := statusCode(t, r); got != 1 {
			t.Fatalf("replica %d on a new node: status %d, want 1 (recovery)", i, got)
		}
	}
	// The owner reaches the second replica.
	rec := replicas[1]
	if r := rec.Do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, share, owner.Sign(t, share))); r.Code != http.StatusOK {
		t.Fatalf("recover: %d %s", r.Code, r.Message)
	}
	for i, r := range replicas {
		eventually(t, "replica "+strconv.Itoa(i)+" serves the recovered state", func() bool { return statusCode(t, r) == 3 })
		if code, got := userKeyThrough(t, r, admin); code != http.StatusOK || got != want {
			t.Fatalf("replica %d: secret %d %s", i, code, got)
		}
	}
}

// TestKeyAPIRecoverySecretsAcrossReplicas: when every replica runs on a
// new node, owners of a two-of-three recovery upload their secrets to
// different replicas, one of them encrypted with the ephemeral key of a
// third replica; the secrets are put together, the replica that receives
// the last one answers that none is missing, and every replica serves
// the recovered state.
func TestKeyAPIRecoverySecretsAcrossReplicas(t *testing.T) {
	k := newKeyAPICluster(t)
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owners := map[string]*testsupport.RecoveryKey{"o1": testsupport.NewRecoveryKey(t), "o2": testsupport.NewRecoveryKey(t), "o3": testsupport.NewRecoveryKey(t)}
	m := govManifest(admin, admin2, nobody, owners)
	sub(m, "Config")["RecoveryThreshold"] = 2
	a := k.start(t, coordtest.NewAESSealer(t))
	encrypted := a.SetManifest(t, encode(t, m))
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	_, want := userKeyThrough(t, a, admin)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	shares := map[string][]byte{}
	for name, ct := range encrypted {
		shares[name] = owners[name].Decrypt(t, ct)
	}

	replicas := []*coordtest.Coordinator{k.start(t, coordtest.NewAESSealer(t)), k.start(t, coordtest.NewAESSealer(t)), k.start(t, coordtest.NewAESSealer(t))}
	for i, r := range replicas {
		k.publish(t, "replica-"+strconv.Itoa(i), r)
	}
	for i, r := range replicas {
		if got := statusCode(t, r); got != 1 {
			t.Fatalf("replica %d on a new node: status %d, want 1 (recovery)", i, got)
		}
		// Once its peers were asked and none holds the key, the replica
		// passes the chart's probe, so that owners reach it through the
		// Service, while /readyz itself says it is not ready.
		eventually(t, "replica "+strconv.Itoa(i)+" passes the chart's readiness probe", func() bool {
			code, _ := probe(t, r, "/readyz?exclude=recovery")
			return code == http.StatusOK
		})
		if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "no replica holds the key") {
			t.Fatalf("replica %d: /readyz %d %s", i, code, body)
		}
	}
	upload := func(c *coordtest.Coordinator, body []byte) recoverAnswer {
		t.Helper()
		r := c.Do(t, http.MethodPost, "/api/v2/recover", body)
		var ans recoverAnswer
		if r.Code != http.StatusOK || json.Unmarshal(r.Data, &ans) != nil {
			t.Fatalf("recover: %d %s", r.Code, r.Message)
		}
		return ans
	}
	// The first owner reaches replica 0.
	if ans := upload(replicas[0], recoverBody(t, shares["o1"], owners["o1"].Sign(t, shares["o1"]))); ans.Remaining != 1 {
		t.Fatalf("first secret: %d remaining, want 1", ans.Remaining)
	}
	// The second fetches the ephemeral key from replica 2 and its upload
	// reaches replica 1.
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, ephemeralKey(t, replicas[2]), shares["o2"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans := upload(replicas[1], recoverBody(t, ct, owners["o2"].Sign(t, shares["o2"]))); ans.Remaining != 0 {
		t.Fatalf("second secret through another replica: %d remaining, want 0 (%s)", ans.Remaining, ans.Message)
	}
	if got := statusCode(t, replicas[1]); got != 3 {
		t.Fatalf("the replica that took the last secret: status %d, want 3", got)
	}
	for i, r := range replicas {
		eventually(t, "replica "+strconv.Itoa(i)+" serves the recovered state", func() bool { return statusCode(t, r) == 3 })
		if code, got := userKeyThrough(t, r, admin); code != http.StatusOK || got != want {
			t.Fatalf("replica %d: secret %d %s", i, code, got)
		}
	}
}

// TestKeyAPIRollbackRefused: a replica that restarts after the state's
// objects were rolled back opens the old state by itself, learns the newer
// generation from a live peer and refuses it.
func TestKeyAPIRollbackRefused(t *testing.T) {
	k := newKeyAPICluster(t)
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	node := coordtest.NewAESSealer(t)
	a := k.start(t, node)
	k.publish(t, "a", a)
	a.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, nil)))
	b := k.start(t, node)
	old := k.secrets(t)
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	eventually(t, "B follows A", func() bool { code, _ := userKeyThrough(t, b, admin); return code == http.StatusOK })
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	k.rollBack(t, old)
	// Without a live peer listed, a restarted replica cannot tell: it
	// opens the rolled-back state.
	k.withdraw(t, "a")
	b = k.start(t, node)
	if b.Core().RollbackRefused() != nil || statusCode(t, b) != 3 {
		t.Fatal("a replica without peers refused the state by itself")
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	// With A listed, the restarted replica learns the newer generation
	// from it and refuses the state.
	k.publish(t, "a", a)
	b = k.start(t, node)
	eventually(t, "B refuses the rolled-back state", func() bool { return b.Core().RollbackRefused() != nil })
	if err := b.Core().RollbackRefused(); !errors.Is(err, store.ErrRollback) {
		t.Fatalf("refusal: %v", err)
	}
	if r := b.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("fedcba9876543210")), admin.TLS); r.Code == http.StatusOK {
		t.Fatal("B accepted a write on the rolled-back state")
	}
}

// TestKeyAPIAttestedPeers runs replicas outside simulation with synthetic
// SGX evidence: a replica on a new node of the same identity joins through
// a peer; one of a lower SecurityVersion or another signer is refused as a
// requester by the live peer, and as a server by a requester on a new node.
func TestKeyAPIAttestedPeers(t *testing.T) {
	k := newKeyAPICluster(t)
	platform := coordtest.NewSGX(t)
	enclave := func(parts func(*sgxtest.QuoteParts)) coordtest.Option {
		return func(c *coordinator.Config) {
			platform.Option()(c)
			c.Issuer = platform.Issuer(parts)
		}
	}
	current := func(q *sgxtest.QuoteParts) { q.SVN = 4 }
	strangers := []struct {
		name  string
		parts func(*sgxtest.QuoteParts)
	}{
		{"lower SecurityVersion", func(q *sgxtest.QuoteParts) { q.SVN = 3 }},
		{"another signer", func(q *sgxtest.QuoteParts) { q.SVN = 4; q.MRSigner[0] ^= 0xff }},
	}
	// stillWaiting checks that c has not got a key after a few rounds.
	stillWaiting := func(t *testing.T, c *coordtest.Coordinator) {
		t.Helper()
		time.Sleep(time.Second)
		if !c.Core().NeedsKey() {
			t.Fatal("the key was handed over")
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	}

	nodeA := coordtest.NewAESSealer(t)
	a := k.start(t, nodeA, enclave(current))
	k.publish(t, "a", a)
	a.SetManifest(t, sgxManifest())

	same := k.start(t, coordtest.NewAESSealer(t), enclave(current))
	eventually(t, "a replica of the same identity joins", func() bool { return !same.Core().NeedsKey() })
	if got := statusCode(t, same); got != 3 {
		t.Fatalf("status %d", got)
	}
	if err := same.Stop(); err != nil {
		t.Fatal(err)
	}

	for _, s := range strangers {
		t.Run(s.name+" as requester", func(t *testing.T) {
			stillWaiting(t, k.start(t, coordtest.NewAESSealer(t), enclave(s.parts)))
		})
	}

	// The stranger opens the state on A's node by itself and is the only
	// peer; a replica of the current identity on a new node refuses it.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range strangers {
		t.Run(s.name+" as server", func(t *testing.T) {
			server := k.start(t, nodeA, enclave(s.parts))
			if server.Core().NeedsKey() {
				t.Fatal("the stranger cannot open the state on A's node")
			}
			k.publish(t, "a", server)
			stillWaiting(t, k.start(t, coordtest.NewAESSealer(t), enclave(current)))
			if err := server.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// replicasThrough returns the replicas /api/v2/status lists through c.
func replicasThrough(t *testing.T, c *coordtest.Coordinator) []wire.ReplicaStatus {
	t.Helper()
	code, body := call(t, c, http.MethodGet, "/api/v2/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body.Message)
	}
	var s wire.StatusV2
	if err := json.Unmarshal(body.Data, &s); err != nil {
		t.Fatal(err)
	}
	return s.Replicas
}

// TestKeyAPIStatusListsReplicas: status through one replica lists every
// replica of the key API Service, one whose endpoint is not ready
// included, and reports a stopped one, still listed, as unreachable.
func TestKeyAPIStatusListsReplicas(t *testing.T) {
	k := newKeyAPICluster(t)
	node := coordtest.NewAESSealer(t)
	named := coordtest.WithReplicaName
	a := k.start(t, node, named("coordinator-a"))
	b := k.start(t, node, named("coordinator-b"))
	c := k.start(t, node, named("coordinator-c"))
	for name, r := range map[string]*coordtest.Coordinator{"a": a, "b": b, "c": c} {
		k.publish(t, name, r)
	}
	// B's endpoint is not ready: it is asked all the same.
	slices := k.env.Clientset.DiscoveryV1().EndpointSlices(k.ns)
	sb, err := slices.Get(t.Context(), "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := slices.Update(t.Context(), sb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	got := replicasThrough(t, a)
	names := make([]string, 0, len(got))
	for _, r := range got {
		names = append(names, r.Name)
		if r.StoreBackend != coordinator.StoreK8sSecret || r.Reason != a.Server.Replica().Reason {
			t.Errorf("replica %+v, want it on the shared store, as Ready as A", r)
		}
	}
	if strings.Join(names, ",") != "coordinator-a,coordinator-b,coordinator-c" {
		t.Fatalf("status through A lists %v, want A first, then B and C", names)
	}

	// C stops but its slice stays: it is reported unreachable by address.
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got = replicasThrough(t, a)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("status with a stopped replica took %v", d)
	}
	_, port, err := net.SplitHostPort(c.Server.KeyAPIAddr())
	if err != nil {
		t.Fatal(err)
	}
	cAddr := net.JoinHostPort(c.Config.PodIP, port)
	// Peers sort by name: C's address comes before B's name.
	if len(got) != 3 || got[0].Name != "coordinator-a" || got[2].Name != "coordinator-b" || !got[2].Ready {
		t.Fatalf("status through A after C stopped: %+v", got)
	}
	if u := got[1]; u.Name != cAddr || u.Ready || !strings.HasPrefix(u.Reason, "unreachable: ") {
		t.Fatalf("stopped C reported as %+v, want %s unreachable", u, cAddr)
	}
}

// TestStatusOmitsReplicasOnFileStore: a Coordinator on the file store
// describes itself only.
func TestStatusOmitsReplicasOnFileStore(t *testing.T) {
	c := coordtest.Start(t)
	code, body := call(t, c, http.MethodGet, "/api/v2/status", nil)
	if code != http.StatusOK || strings.Contains(string(body.Data), "replicas") || !strings.Contains(string(body.Data), `"replica"`) {
		t.Fatalf("status: %d %s", code, body.Data)
	}
}
