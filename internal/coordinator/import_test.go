package coordinator_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// withImport imports the seal folder dir into the distributed store.
func withImport(dir string) coordtest.Option {
	return func(c *coordinator.Config) { c.ImportSealDir = dir }
}

// folderBytes returns every file below dir, the lock file included.
func folderBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// tryActivateApp activates an app marble and returns the error.
func tryActivateApp(t *testing.T, c *coordtest.Coordinator, uuid string) error {
	t.Helper()
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), "app")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := coordtest.Dial(c.MeshAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = coordtest.Activate(ctx, conn, id, "app", uuid)
	return err
}

// TestImportSingleCoordinatorState moves a single Coordinator's state
// into distributed mode: the manifest, root certificate, secrets and
// activation counters are the same, the owners' original recovery secret
// recovers the imported state, a restart with the setting left in carries
// on, another folder's state is refused, and the folder is never written.
func TestImportSingleCoordinatorState(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owner := testsupport.NewRecoveryKey(t)
	keys := map[string]*testsupport.RecoveryKey{"owner0": owner}
	m := govManifest(admin, admin2, nobody, keys)
	sub(sub(m, "Marbles"), "app")["MaxActivations"] = 3
	manifest := encode(t, m)
	sealer := coordtest.NewAESSealer(t)

	// The single Coordinator.
	dir := t.TempDir()
	single := coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(sealer))
	encrypted := single.SetManifest(t, manifest)
	if r := single.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	root := single.RootCertificate()
	before := activateApp(t, single, uuidA).GetFiles()
	if err := tryActivateApp(t, single, "0b6a1f52-7c3e-4d9a-8e21-5f4c3b2a1d0e"); err != nil {
		t.Fatal(err)
	}
	wantManifest := single.Do(t, http.MethodGet, "/api/v2/manifest", nil)

	env := kubetest.Start(t)
	ns := env.Namespace(t)
	kube := coordtest.WithKubeStore(env.Kubeconfig, ns, "coord-state")

	// A Coordinator still using the folder keeps it from being imported.
	if _, err := coordtest.TryStart(t, kube, coordtest.WithSealer(sealer), withImport(dir)); err == nil || !strings.Contains(err.Error(), "stop the single Coordinator") {
		t.Fatalf("import of a folder in use: %v", err)
	}
	if err := single.Stop(); err != nil {
		t.Fatal(err)
	}
	files := folderBytes(t, dir)

	// Another machine cannot unseal the folder: refused, nothing written.
	if _, err := coordtest.TryStart(t, kube, coordtest.WithSealer(coordtest.NewAESSealer(t)), withImport(dir)); err == nil ||
		!strings.Contains(err.Error(), "run the import where the single Coordinator ran") {
		t.Fatalf("import on another machine: %v", err)
	}
	if _, err := env.Clientset.CoreV1().Secrets(ns).Get(t.Context(), "coord-state", metav1.GetOptions{}); err == nil {
		t.Fatal("a refused import wrote the shared state")
	}

	c := coordtest.Start(t, kube, coordtest.WithSealer(sealer), withImport(dir))
	if got := statusCode(t, c); got != 3 {
		t.Fatalf("status after the import = %d", got)
	}
	if !c.RootCertificate().Equal(root) {
		t.Fatal("the root certificate changed in the import")
	}
	if got := c.Do(t, http.MethodGet, "/api/v2/manifest", nil); !bytes.Equal(got.Data, wantManifest.Data) {
		t.Fatalf("manifest after the import: %s, want %s", got.Data, wantManifest.Data)
	}
	after := activateApp(t, c, uuidA).GetFiles()
	for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
		if !bytes.Equal(before[f], after[f]) {
			t.Fatalf("%s differs after the import", f)
		}
	}
	if err := tryActivateApp(t, c, "c3d2e1f0-1a2b-4c3d-8e4f-5a6b7c8d9e0f"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("activation counter lost in the import: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	// A restart with the setting left in carries on with the shared state.
	c = coordtest.Start(t, kube, coordtest.WithSealer(sealer), withImport(dir))
	if got := statusCode(t, c); got != 3 || !c.RootCertificate().Equal(root) {
		t.Fatalf("restart with the import left set: status %d", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	// Without this platform's KEK entry the Coordinator enters recovery,
	// and the owner's original recovery secret recovers it.
	if err := env.Clientset.CoreV1().ConfigMaps(ns).Delete(t.Context(), store.DefaultKEKMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c = coordtest.Start(t, kube, coordtest.WithSealer(sealer))
	if got := statusCode(t, c); got != 1 {
		t.Fatalf("status without the KEK entry = %d", got)
	}
	share := owner.Decrypt(t, encrypted["owner0"])
	r := c.Do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, share, owner.Sign(t, share)))
	var a recoverAnswer
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &a) != nil || a.Remaining != 0 {
		t.Fatalf("recovery with the original secret: %d %s %s", r.Code, r.Message, r.Data)
	}
	if got := statusCode(t, c); got != 3 || !c.RootCertificate().Equal(root) {
		t.Fatalf("after recovery: status %d", got)
	}
	if r := c.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey", nil, admin.TLS); r.Code != http.StatusOK ||
		!strings.Contains(string(r.Data), base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))) {
		t.Fatalf("user-defined secret after recovery: %d %s", r.Code, r.Data)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	// Another single Coordinator's state is refused.
	otherDir := t.TempDir()
	other := coordtest.Start(t, coordtest.WithSealDir(otherDir), coordtest.WithSealer(sealer))
	other.SetManifest(t, manifest)
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := coordtest.TryStart(t, kube, coordtest.WithSealer(sealer), withImport(otherDir))
	if err == nil || !strings.Contains(err.Error(), "another data key") || !strings.Contains(err.Error(), "remove the setting "+coordinator.EnvImportSealDir) {
		t.Fatalf("import of another state: %v", err)
	}

	if got := folderBytes(t, dir); !maps.EqualFunc(got, files, bytes.Equal) {
		t.Fatal("the imported folder changed")
	}
}
