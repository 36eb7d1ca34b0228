package hatest_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/marble/marbleenv"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/hatest"
)

// raceRounds is how often each race runs, each time on a fresh state.
const raceRounds = 3

// TestFreshReplicasRaceWithStartupManifest starts two fresh replicas at
// once with the same startup manifest, on a state that does not exist
// yet: both start and serve one state.
func TestFreshReplicasRaceWithStartupManifest(t *testing.T) {
	kube := controlPlane.Env(t)
	bin := coordinatorBin.Path(t)
	u := newUsers(t)
	raw := testManifest(t, u, 10, 10, 1)
	path := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for round := range raceRounds {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			cl := hatest.New(t, hatest.Config{Bin: bin, Kube: kube, Namespace: kube.Namespace(t), Replicas: 2, StartupManifest: path})
			cl.Start(t)
			requireOneState(t, cl, raw)
		})
	}
}

// TestFreshReplicasRaceToSetManifest starts two fresh replicas and sets a
// different manifest through each at once: exactly one is acknowledged,
// and both replicas serve it on one state.
func TestFreshReplicasRaceToSetManifest(t *testing.T) {
	kube := controlPlane.Env(t)
	bin := coordinatorBin.Path(t)
	u := newUsers(t)
	manifests := [][]byte{testManifest(t, u, 10, 10, 1), testManifest(t, u, 10, 10, 2)}
	for round := range raceRounds {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			cl := hatest.New(t, hatest.Config{Bin: bin, Kube: kube, Namespace: kube.Namespace(t), Replicas: 2})
			cl.Start(t)
			type answer struct {
				i   int // the manifest sent
				r   coordtest.Response
				err error
			}
			answers := make(chan answer, 2)
			start := make(chan struct{})
			for i, r := range cl.Replicas {
				go func() {
					c := hatest.NewClient(r.ClientAddr, nil)
					<-start
					resp, err := c.Do(t.Context(), http.MethodPost, "/api/v2/manifest", manifestBody(t, manifests[i]))
					answers <- answer{i, resp, err}
				}()
			}
			close(start)
			winner := -1
			for range cl.Replicas {
				a := <-answers
				switch {
				case a.err != nil:
					t.Errorf("setting a manifest: %v", a.err)
				case a.r.Code == http.StatusOK && winner >= 0:
					t.Errorf("both manifests were acknowledged")
				case a.r.Code == http.StatusOK:
					winner = a.i
				case a.r.Code >= 500:
					t.Errorf("the losing manifest set: %d %s, expected a refusal", a.r.Code, a.r.Message)
				default:
					t.Logf("the losing manifest set: %d %s", a.r.Code, a.r.Message)
				}
			}
			if winner < 0 {
				t.Fatal("no manifest was acknowledged")
			}
			requireOneState(t, cl, manifests[winner])
		})
	}
}

// requireOneState checks that every replica of cl runs, serves manifest
// raw and the same root certificate, and activates marbles under the same
// marble root.
func requireOneState(t *testing.T, cl *hatest.Cluster, raw []byte) {
	t.Helper()
	for _, err := range cl.Exits() {
		t.Fatalf("a Coordinator exited: %v", err)
	}
	ctx := t.Context()
	var roots []*x509.Certificate
	var marbleRoots [][]byte
	for _, r := range cl.Replicas {
		eventually(t, r.Name+" serves the acknowledged manifest", func() error {
			resp, err := hatest.NewClient(r.ClientAddr, nil).Do(ctx, http.MethodGet, "/api/v2/manifest", nil)
			if err != nil {
				return err
			}
			var m struct {
				Manifest []byte `json:"manifest"`
			}
			if resp.Code != http.StatusOK || json.Unmarshal(resp.Data, &m) != nil {
				return fmt.Errorf("manifest: %d %s", resp.Code, resp.Message)
			}
			if !bytes.Equal(m.Manifest, raw) {
				return fmt.Errorf("serves another manifest")
			}
			return nil
		})
		root, err := r.Root(ctx)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, root)
		id, err := coordtest.NewMarbleIdentity(elliptic.P256(), typeFree)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := coordtest.Dial(r.MeshAddr, id)
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := coordtest.Activate(actx, conn, id, typeFree, uuid.NewString())
		cancel()
		conn.Close()
		if err != nil {
			t.Fatalf("activating through %s: %v", r.Name, err)
		}
		marbleRoots = append(marbleRoots, p.GetEnv()[marbleenv.RootCA])
	}
	for i := range roots {
		if !roots[i].Equal(roots[0]) {
			t.Errorf("%s serves another root certificate than %s", cl.Replicas[i].Name, cl.Replicas[0].Name)
		}
		if !bytes.Equal(marbleRoots[i], marbleRoots[0]) {
			t.Errorf("%s issues marble certificates under another root than %s", cl.Replicas[i].Name, cl.Replicas[0].Name)
		}
	}
}
