package core

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// Update log messages, as MarbleRun writes them.
const (
	logInitialManifest = "Initial manifest set"
	logSecurityVersion = "SecurityVersion increased"
	// logSecurityVersionLowered records a full update that lowers a
	// package's enforced security version (MarbleRun logs no such line).
	logSecurityVersionLowered = "SecurityVersion lowered"
	logSecretSet              = "Secret set"
	logUpdateInitiated        = "Complete Manifest update initiated by user"
	logUpdateAcknowledge      = "Complete Manifest update acknowledged by user"
	logUpdateCancelled        = "Complete Manifest update cancelled by user"
	logUpdateApplied          = "Complete Manifest updated"
)

// updateLogEntry renders one update log line.
func updateLogEntry(now time.Time, message string, fields map[string]any) (string, error) {
	line := maps.Clone(fields)
	if line == nil {
		line = map[string]any{}
	}
	line["time"] = now.UTC().Format(time.RFC3339Nano)
	line["update"] = message
	raw, err := json.Marshal(line)
	if err != nil {
		return "", fmt.Errorf("encoding update log entry: %w", err)
	}
	return string(raw), nil
}

// commitWithLog durably applies changes together with new update log
// entries, and only then appends the entries to the in-memory log. c.mu
// must be held.
func (c *Core) commitWithLog(ctx context.Context, changes map[string][]byte, entries ...string) error {
	if changes == nil {
		changes = make(map[string][]byte, len(entries))
	}
	seq := c.updateSeq
	for _, e := range entries {
		seq++
		changes[updateLogKey(seq)] = []byte(e)
	}
	if err := c.commit(ctx, changes); err != nil {
		return fmt.Errorf("storing the change: %w", err)
	}
	c.updateSeq = seq
	c.updateLog = append(c.updateLog, entries...)
	return nil
}
