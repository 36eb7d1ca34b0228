package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{con: &console{w: &out}, prefix: "srv"}
	for _, part := range []string{"first li", "ne\r\nsecond\nthi", "rd"} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	want := "  srv   | first line\n  srv   | second\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestVerifyCoordinatorGivesUpWhenTheProcessExits(t *testing.T) {
	p := &process{name: "coord", done: make(chan struct{}), err: errors.New("exit status 1")}
	close(p.done)
	addr := fmt.Sprintf("127.0.0.1:%d", mustFreePort(t))
	_, err := verifyCoordinator(t.Context(), p, addr, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "coord process exited") {
		t.Fatalf("err = %v", err)
	}
}

func mustFreePort(t *testing.T) int {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("ports = %v", ports)
	}
}

func TestBaseEnv(t *testing.T) {
	t.Setenv("EDG_STARTUP_MANIFEST", "/elsewhere")
	t.Setenv("OE_SIMULATION", "0")
	t.Setenv("DEMO_TEST_KEEP", "yes")
	env := strings.Join(baseEnv(), "\n")
	if strings.Contains(env, "EDG_STARTUP_MANIFEST") || strings.Contains(env, "OE_SIMULATION") {
		t.Fatal("mesh settings inherited")
	}
	if !strings.Contains(env, "DEMO_TEST_KEEP=yes") {
		t.Fatal("other variables dropped")
	}
}
