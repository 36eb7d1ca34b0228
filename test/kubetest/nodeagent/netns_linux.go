package nodeagent

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetNS runs fn on a thread that has joined the network namespace at
// path ("" for the agent's own). Sockets fn creates belong to that
// namespace for their whole life, whichever thread uses them later.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	runtime.LockOSThread()
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening the agent's network namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("joining network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := unix.Setns(own, unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine
		// instead of reusing a thread in the wrong namespace.
		return fmt.Errorf("returning from network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// listenIn listens on addr inside the network namespace at netns.
func listenIn(netns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetNS(netns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// dialIn connects to addr (an IP literal and port) inside the network
// namespace at netns.
func dialIn(ctx context.Context, netns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(netns, func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
