package hatest_test

import (
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/hatest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// Marble types of the test manifest.
const (
	typeFree    = "free"    // no MaxActivations: activations need no write
	typeLimited = "limited" // MaxActivations far above what a test needs
	typeScarce  = "scarce"  // MaxActivations that a test reaches
)

// users of the test manifest: updater may raise the package's
// SecurityVersion, writer may read and write the user-defined secret note.
type users struct{ updater, writer *testsupport.User }

func newUsers(t testing.TB) users {
	return users{updater: testsupport.NewUser(t, "updater"), writer: testsupport.NewUser(t, "writer")}
}

// testManifest is a manifest with the three marble types of one package,
// the user-defined secret note and the two users. svn is the package's
// SecurityVersion.
func testManifest(t testing.TB, u users, limited, scarce, svn int) []byte {
	t.Helper()
	pkg := map[string]any{"Package": "app"}
	with := func(limit int) map[string]any { return map[string]any{"Package": "app", "MaxActivations": limit} }
	return encode(t, map[string]any{
		"Packages": map[string]any{"app": map[string]any{"SignerID": strings.Repeat("ab", 32), "ProductID": 7, "SecurityVersion": svn}},
		"Marbles":  map[string]any{typeFree: pkg, typeLimited: with(limited), typeScarce: with(scarce)},
		"Secrets":  map[string]any{"note": map[string]any{"Type": "plain", "UserDefined": true}},
		"Users": map[string]any{
			u.updater.Name: map[string]any{"Certificate": u.updater.CertPEM, "Roles": []string{"svn"}},
			u.writer.Name:  map[string]any{"Certificate": u.writer.CertPEM, "Roles": []string{"note"}},
		},
		"Roles": map[string]any{
			"svn":  map[string]any{"ResourceType": "Packages", "ResourceNames": []string{"app"}, "Actions": []string{"UpdateSecurityVersion"}},
			"note": map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"note"}, "Actions": []string{"ReadSecret", "WriteSecret"}},
		},
	})
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// manifestBody is the v2 body carrying a manifest.
func manifestBody(t testing.TB, raw []byte) []byte {
	return encode(t, map[string]string{"manifest": base64.StdEncoding.EncodeToString(raw)})
}

// noteBody is the v2 body writing value into the secret note.
func noteBody(t testing.TB, value string) []byte {
	return encode(t, map[string]any{"secrets": map[string]any{"note": map[string]any{"Key": []byte(value)}}})
}

// noteValue is the i-th value the secret writer writes.
func noteValue(i int) string { return fmt.Sprintf("note-%06d", i) }

// setManifest sets raw through c and fails t unless it is acknowledged.
func setManifest(t testing.TB, c *hatest.Client, raw []byte) {
	t.Helper()
	r, err := c.Do(t.Context(), http.MethodPost, "/api/v2/manifest", manifestBody(t, raw))
	if err != nil || r.Code != http.StatusOK {
		t.Fatalf("setting the manifest: %v %d %s", err, r.Code, r.Message)
	}
}

// activations counts the outcomes of one marble type's activations.
type activations struct {
	acks      atomic.Int64
	exhausted atomic.Int64 // refused: the type reached MaxActivations
	failed    atomic.Int64 // no activation; a marble tries again
	cut       atomic.Int64 // cut by the end of the load: outcome unknown
	mu        sync.Mutex
	times     []time.Time // of the acknowledged ones
	codes     map[codes.Code]int
}

func (a *activations) ack(at time.Time) {
	a.acks.Add(1)
	a.mu.Lock()
	a.times = append(a.times, at)
	a.mu.Unlock()
}

func (a *activations) fail(err error) {
	c := status.Code(err)
	if c == codes.ResourceExhausted {
		a.exhausted.Add(1)
		return
	}
	a.failed.Add(1)
	a.mu.Lock()
	if a.codes == nil {
		a.codes = map[codes.Code]int{}
	}
	a.codes[c]++
	a.mu.Unlock()
}

// ackTimes returns the times of the acknowledged activations, sorted.
func (a *activations) ackTimes() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.times)
	slices.SortFunc(out, func(x, y time.Time) int { return x.Compare(y) })
	return out
}

func (a *activations) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("%d acknowledged, %d refused at the limit, %d failed %v, %d cut by the end of the load", a.acks.Load(), a.exhausted.Load(), a.failed.Load(), a.codes, a.cut.Load())
}

// activate activates one marble of type typ through the mesh address,
// on a connection of its own, as a marble does.
func activate(ctx context.Context, meshAddr string, id *coordtest.MarbleIdentity, typ string) error {
	conn, err := coordtest.Dial(meshAddr, id)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = coordtest.Activate(ctx, conn, id, typ, uuid.NewString())
	return err
}

// activateLoop activates marbles of type typ through meshAddr until ctx
// ends, pausing pause between attempts.
func activateLoop(ctx context.Context, t testing.TB, meshAddr, typ string, pause time.Duration, out *activations) {
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), typ)
	if err != nil {
		t.Error(err)
		return
	}
	for ctx.Err() == nil {
		err := activate(ctx, meshAddr, id, typ)
		switch {
		case err == nil:
			out.ack(time.Now())
		case ctx.Err() != nil:
			out.cut.Add(1) // neither acknowledged nor refused
			return
		default:
			out.fail(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// writes counts the outcomes of a sequence of writes.
type writes struct {
	mu        sync.Mutex
	attempted int   // index of the last write sent (the first is 1)
	acked     []int // indexes of the acknowledged ones, increasing
	codes     map[int]int
	noAnswer  int
}

// send notes that write i is sent.
func (w *writes) send(i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attempted = i
}

// record notes the answer to write i.
func (w *writes) record(i, code int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil:
		w.noAnswer++
	case code == http.StatusOK:
		w.acked = append(w.acked, i)
	default:
		if w.codes == nil {
			w.codes = map[int]int{}
		}
		w.codes[code]++
	}
}

// snapshot returns the last attempted index, the acknowledged ones and the
// refusals by HTTP code.
func (w *writes) snapshot() (attempted int, acked []int, codes map[int]int, noAnswer int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := map[int]int{}
	for k, v := range w.codes {
		c[k] = v
	}
	return w.attempted, slices.Clone(w.acked), c, w.noAnswer
}

func (w *writes) String() string {
	attempted, acked, codes, noAnswer := w.snapshot()
	return fmt.Sprintf("%d sent, %d acknowledged, refused by code %v, %d without answer", attempted, len(acked), codes, noAnswer)
}

// writeLoop runs write(i) for i = 1, 2, … until ctx ends, pausing pause
// between writes; onAnswer, if set, sees every answer.
func writeLoop(ctx context.Context, pause time.Duration, out *writes, write func(ctx context.Context, i int) (coordtest.Response, error), onAnswer func(r coordtest.Response, err error)) {
	for i := 1; ctx.Err() == nil; i++ {
		out.send(i)
		r, err := write(ctx, i)
		if ctx.Err() != nil && err != nil {
			return // cut by the end of the load: it may have been stored
		}
		out.record(i, r.Code, err)
		if onAnswer != nil {
			onAnswer(r, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// noteWriter writes noteValue(i) as the writer user.
func noteWriter(t testing.TB, c *hatest.Client) func(ctx context.Context, i int) (coordtest.Response, error) {
	return func(ctx context.Context, i int) (coordtest.Response, error) {
		return c.Do(ctx, http.MethodPost, "/api/v2/secrets", noteBody(t, noteValue(i)))
	}
}

// svnUpdater raises the package's SecurityVersion to 1+i as the updater
// user: each attempt asks for a higher one than all before.
func svnUpdater(t testing.TB, c *hatest.Client) func(ctx context.Context, i int) (coordtest.Response, error) {
	return func(ctx context.Context, i int) (coordtest.Response, error) {
		upd := encode(t, map[string]any{"Packages": map[string]any{"app": map[string]any{"SecurityVersion": 1 + i}}})
		return c.Do(ctx, http.MethodPost, "/api/v2/update", manifestBody(t, upd))
	}
}

// readNote reads the secret note through c.
func readNote(ctx context.Context, c *hatest.Client) (string, error) {
	r, err := c.Do(ctx, http.MethodGet, "/api/v2/secrets?s=note", nil)
	if err != nil {
		return "", err
	}
	if r.Code != http.StatusOK {
		return "", fmt.Errorf("reading the note: %d %s", r.Code, r.Message)
	}
	var v struct {
		Secrets map[string]struct{ Private []byte } `json:"secrets"`
	}
	if err := json.Unmarshal(r.Data, &v); err != nil {
		return "", err
	}
	return string(v.Secrets["note"].Private), nil
}

// securityVersions returns the SecurityVersions of package app that the
// update log through c records as raised.
func securityVersions(ctx context.Context, c *hatest.Client) ([]int, error) {
	r, err := c.Do(ctx, http.MethodGet, "/api/v2/update", nil)
	if err != nil {
		return nil, err
	}
	if r.Code != http.StatusOK {
		return nil, fmt.Errorf("update log: %d %s", r.Code, r.Message)
	}
	var l struct {
		UpdateLog []string `json:"updateLog"`
	}
	if err := json.Unmarshal(r.Data, &l); err != nil {
		return nil, err
	}
	var out []int
	for _, line := range l.UpdateLog {
		var e struct {
			Update  string `json:"update"`
			Package string `json:"package"`
			Version int    `json:"new version"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("update log line %q: %w", line, err)
		}
		if e.Update == "SecurityVersion increased" && e.Package == "app" {
			out = append(out, e.Version)
		}
	}
	return out, nil
}

// eventually polls cond every 100 ms until it returns nil, failing t with
// its last error after 20 s.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still not after 20 s: %v", what, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// longestGap returns the longest time in [from, to] without an
// acknowledgement at one of times (sorted).
func longestGap(times []time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, at := range times {
		if at.Before(from) || at.After(to) {
			continue
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return max(gap, to.Sub(prev))
}
