package core

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// kubeNode opens a KubeStore on ns with the sealer of a node: its own
// sealing key for both seal modes.
func kubeNode(t *testing.T, ns string, node byte) *store.KubeStore {
	t.Helper()
	sealer, err := seal.NewAESGCMSealer(bytes.Repeat([]byte{node}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenKube(store.KubeOptions{
		Client: kubeEnv(t).Clientset, Namespace: ns,
		Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sealer, seal.ModeUniqueKey: sealer},
	})
	if err != nil {
		t.Fatalf("OpenKube: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKubeKeySharing: a Coordinator on another node cannot unseal the
// state and waits for a key; a peer's key opens it, after which that node
// starts by itself. A generation floor above the stored state is a
// rollback: the Coordinator keeps serving and refuses writes.
func TestKubeKeySharing(t *testing.T) {
	ctx := context.Background()
	u := newGovUsers(t)
	ns := kubeEnv(t).Namespace(t)
	a := newSimCore(t, kubeNode(t, ns, 1))
	kek, gen, ok := a.KeyForPeer()
	if !ok || len(kek) == 0 || gen == 0 {
		t.Fatalf("KeyForPeer on a serving Coordinator: %d bytes, generation %d, ok %v", len(kek), gen, ok)
	}
	if a.NeedsKey() {
		t.Fatal("a serving Coordinator needs a key")
	}
	if err := a.JoinWithKey(ctx, kek, gen); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("JoinWithKey on a serving Coordinator: %v", err)
	}

	b := newSimCore(t, kubeNode(t, ns, 2))
	if s, _ := b.Status(); s != StateRecovery || !b.NeedsKey() {
		t.Fatalf("a Coordinator on another node: state %v, needs a key %v", s, b.NeedsKey())
	}
	if _, _, ok := b.KeyForPeer(); ok {
		t.Fatal("KeyForPeer in recovery is ok")
	}
	if err := b.JoinWithKey(ctx, bytes.Repeat([]byte{9}, len(kek)), gen); KindOf(err) != KindInvalidArgument || !b.NeedsKey() {
		t.Fatalf("JoinWithKey with a wrong key: %v (kind %v), needs a key %v", err, KindOf(err), b.NeedsKey())
	}
	if err := b.JoinWithKey(ctx, kek, gen); err != nil {
		t.Fatalf("JoinWithKey: %v", err)
	}
	ra, _ := a.RootCertificate()
	rb, _ := b.RootCertificate()
	if s, _ := b.Status(); s != StateAcceptingManifest || b.NeedsKey() || !ra.Equal(rb) {
		t.Fatalf("after JoinWithKey: state %v, needs a key %v, same root %v", s, b.NeedsKey(), ra.Equal(rb))
	}
	if bk, _, ok := b.KeyForPeer(); !ok || !bytes.Equal(bk, kek) {
		t.Fatal("the joined Coordinator does not hand over the same key")
	}

	// A write through a; b takes it over when told of the generation.
	raw := encodeManifest(t, govManifest(u, nil))
	if _, err := a.SetManifest(ctx, raw); err != nil {
		t.Fatal(err)
	}
	_, gen, _ = a.KeyForPeer()
	if err := b.RaiseGenerationFloor(ctx, gen); err != nil {
		t.Fatalf("RaiseGenerationFloor(%d): %v", gen, err)
	}
	if got, _, ok := b.ManifestInfo(); !ok || !bytes.Equal(got, raw) {
		t.Fatal("b does not serve the manifest after RaiseGenerationFloor")
	}
	if err := b.RaiseGenerationFloor(ctx, gen); err != nil {
		t.Fatalf("RaiseGenerationFloor at the served generation: %v", err)
	}

	// b's node starts by itself now: its entry is in the KEK map.
	c := newSimCore(t, kubeNode(t, ns, 2))
	if s, _ := c.Status(); s != StateAcceptingMarbles || c.NeedsKey() {
		t.Fatalf("a Coordinator on the joined node: state %v, needs a key %v", s, c.NeedsKey())
	}

	// A third node joining with a generation above the stored one: the
	// state it would open is older than the peer has seen.
	d := newSimCore(t, kubeNode(t, ns, 3))
	if err := d.JoinWithKey(ctx, kek, gen+1); KindOf(err) != KindFailedPrecondition || !errors.Is(err, store.ErrRollback) || !d.NeedsKey() {
		t.Fatalf("JoinWithKey above the stored generation: %v, needs a key %v", err, d.NeedsKey())
	}

	// b is told of a generation above the stored one: it keeps serving,
	// refuses writes, and says why.
	err := b.RaiseGenerationFloor(ctx, gen+1)
	if !errors.Is(err, store.ErrRollback) || KindOf(err) != KindUnavailable {
		t.Fatalf("RaiseGenerationFloor above the stored generation: %v", err)
	}
	if !errors.Is(b.RollbackRefused(), store.ErrRollback) {
		t.Fatalf("RollbackRefused = %v", b.RollbackRefused())
	}
	if s, _ := b.Status(); s != StateAcceptingMarbles {
		t.Fatalf("state %v after a refused rollback", s)
	}
	if got, _, ok := b.ManifestInfo(); !ok || !bytes.Equal(got, raw) {
		t.Fatal("b stopped serving its state after a refused rollback")
	}
	if err := b.Reload(ctx); !errors.Is(err, store.ErrRollback) || KindOf(err) != KindUnavailable {
		t.Fatalf("Reload of rolled-back state: %v", err)
	}
	if err := b.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userKey": {Key: bytes.Repeat([]byte("k"), 16)}}); KindOf(err) != KindUnavailable || !errors.Is(err, store.ErrRollback) {
		t.Fatalf("a write after a refused rollback: %v (kind %v)", err, KindOf(err))
	}
	// a, which was told nothing, still writes; once the stored state
	// reaches b's floor, b takes writes again.
	if err := a.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userKey": {Key: bytes.Repeat([]byte("k"), 16)}}); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userKey": {Key: bytes.Repeat([]byte("j"), 16)}}); err != nil {
		t.Fatalf("a write once the stored state is new enough again: %v", err)
	}
	if b.RollbackRefused() != nil {
		t.Fatal("RollbackRefused stays set")
	}
}

// TestKubeRecoveryNewKEK: a Coordinator on a node without an entry is
// recovered with the owners' secret; the state gets a new key-encryption
// key sealed for that node, a running peer follows it, and both nodes
// start by themselves afterwards.
func TestKubeRecoveryNewKEK(t *testing.T) {
	ctx := context.Background()
	u := newGovUsers(t)
	owner := testsupport.NewRecoveryKey(t)
	ns := kubeEnv(t).Namespace(t)
	a := newSimCore(t, kubeNode(t, ns, 1))
	encrypted, err := a.SetManifest(ctx, encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"owner": owner})))
	if err != nil {
		t.Fatal(err)
	}
	kek1, _, _ := a.KeyForPeer()

	b := newSimCore(t, kubeNode(t, ns, 2))
	if !b.NeedsKey() {
		t.Fatal("a Coordinator on another node does not need a key")
	}
	share := owner.Decrypt(t, encrypted["owner"])
	if n, err := b.Recover(ctx, share, owner.Sign(t, share)); err != nil || n != 0 {
		t.Fatalf("Recover: %d, %v", n, err)
	}
	kek2, _, ok := b.KeyForPeer()
	if s, _ := b.Status(); s != StateAcceptingMarbles || b.NeedsKey() || !ok || bytes.Equal(kek1, kek2) {
		t.Fatalf("after recovery: state %v, needs a key %v, new key %v", s, b.NeedsKey(), ok && !bytes.Equal(kek1, kek2))
	}
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, ok := a.KeyForPeer(); !ok || !bytes.Equal(got, kek2) {
		t.Fatal("the running peer does not follow the new key-encryption key")
	}
	for _, node := range []byte{1, 2} {
		c := newSimCore(t, kubeNode(t, ns, node))
		if s, _ := c.Status(); s != StateAcceptingMarbles {
			t.Fatalf("a Coordinator on node %d after the recovery: state %v", node, s)
		}
	}
}
