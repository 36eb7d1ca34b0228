package nodeagent

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Timeline collects what happened during a test, with the time since it
// began, for a readable account when the test ends.
type Timeline struct {
	start time.Time
	mu    sync.Mutex
	lines []string
}

// NewTimeline starts a timeline now.
func NewTimeline() *Timeline { return &Timeline{start: time.Now()} }

// Addf records one event.
func (t *Timeline) Addf(format string, args ...any) {
	if t == nil {
		return
	}
	line := fmt.Sprintf("%8.3fs  %s", time.Since(t.start).Seconds(), fmt.Sprintf(format, args...))
	t.mu.Lock()
	t.lines = append(t.lines, line)
	t.mu.Unlock()
}

// String returns every event, one per line.
func (t *Timeline) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
