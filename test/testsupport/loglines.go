package testsupport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// JSONLogLines parses the JSON log lines (those that start with "{") of a
// process's output and fails t on a line that is not valid JSON or that
// holds a key twice in one object, which encoding/json would silently
// collapse. Other lines are skipped.
func JSONLogLines(t testing.TB, output string) []map[string]any {
	t.Helper()
	var records []map[string]any
	for _, line := range strings.Split(output, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		if err := DuplicateKeys([]byte(line)); err != nil {
			t.Errorf("log line %s: %v", line, err)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line %s: %v", line, err)
			continue
		}
		records = append(records, m)
	}
	return records
}

// DuplicateKeys returns an error naming the first key that appears twice in
// one JSON object of data, at any depth, or the syntax error of data.
func DuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := checkValue(dec, "$"); err != nil {
		return err
	}
	switch _, err := dec.Token(); {
	case err == nil:
		return errors.New("data after the JSON value")
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("after the JSON value: %w", err)
	}
	return nil
}

func checkValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := keyTok.(string)
			if seen[key] {
				return fmt.Errorf("key %q appears twice in %s", key, path)
			}
			seen[key] = true
			if err := checkValue(dec, path+"."+key); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := checkValue(dec, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}
