package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent runs every container through its helper binary (see
// nodeagent-exec), started in a private mount namespace:
//
//	nodeagent-exec pause         holds a Pod's network namespace (started
//	                             with CLONE_NEWNET), brings its loopback up
//	                             and waits for SIGTERM;
//	nodeagent-exec run SPEC      builds the container's root file system in
//	                             a tmpfs, joins the Pod's network namespace,
//	                             chroots, drops to the container's user and
//	                             executes its command.

// mountSpec is one bind mount into the container's root.
type mountSpec struct {
	// Source is a file or folder on the host.
	Source string `json:"source"`
	// Target is the absolute path inside the container.
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// execSpec is what the helper needs to start one container process.
type execSpec struct {
	// Root is an empty folder the helper mounts a tmpfs on and fills.
	Root string `json:"root"`
	// NetNS is the Pod's network namespace, /proc/<pause pid>/ns/net.
	NetNS string `json:"netns"`
	// HostDirs are host folders (or symlinks to them) that appear read-only
	// at the same path inside the container, e.g. /usr.
	HostDirs []string `json:"hostDirs,omitempty"`
	// Mounts are the image's files and the Pod's volumes.
	Mounts []mountSpec `json:"mounts"`
	// ReadOnlyRoot remounts the root read-only once it is built.
	ReadOnlyRoot bool     `json:"readOnlyRoot,omitempty"`
	WorkingDir   string   `json:"workingDir,omitempty"`
	UID          *int     `json:"uid,omitempty"`
	GID          *int     `json:"gid,omitempty"`
	Groups       []int    `json:"groups,omitempty"`
	Argv         []string `json:"argv"`
	// AgentPID is the agent's process ID, the helper's parent.
	AgentPID int      `json:"agentPid"`
	Env      []string `json:"env"`
}

// HelperMain is the main function of the nodeagent-exec helper. It returns
// only on failure; the exit code is then 127.
func HelperMain(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: nodeagent-exec pause | run SPEC-FILE")
	}
	switch args[0] {
	case "pause":
		return pause()
	case "run":
		if len(args) != 2 {
			return errors.New("usage: nodeagent-exec run SPEC-FILE")
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		var spec execSpec
		if err := json.Unmarshal(b, &spec); err != nil {
			return fmt.Errorf("decoding %s: %w", args[1], err)
		}
		return runContainer(&spec)
	default:
		return fmt.Errorf("unknown helper command %q", args[0])
	}
}

// pause brings up the loopback interface of the (new) network namespace it
// runs in and waits until it is told to stop.
func pause() error {
	if err := loopbackUp(); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// Tell the agent the namespace is ready.
	fmt.Println("ready")
	<-sig
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, req); err != nil {
		return fmt.Errorf("reading the flags of lo: %w", err)
	}
	req.SetUint16(req.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, req); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// runContainer must run in a private mount namespace (the agent starts the
// helper with CLONE_NEWNS, which also makes every mount private).
func runContainer(s *execSpec) error {
	if len(s.Argv) == 0 {
		return errors.New("the container has no command")
	}
	root := s.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mounting the root tmpfs on %s: %w", root, err)
	}
	for _, d := range s.HostDirs {
		if err := hostDir(root, d); err != nil {
			return err
		}
	}
	// System folders every container gets.
	for _, d := range []string{"/dev", "/proc", "/etc", "/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := unix.Mount("/proc", filepath.Join(root, "proc"), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	for _, dev := range []string{"null", "zero", "random", "urandom"} {
		m := mountSpec{Source: "/dev/" + dev, Target: "/dev/" + dev}
		if err := bind(root, m); err != nil {
			return err
		}
	}
	// Mount parents before children.
	mounts := append([]mountSpec(nil), s.Mounts...)
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(mounts[i].Target), "/") < strings.Count(filepath.Clean(mounts[j].Target), "/")
	})
	for _, m := range mounts {
		if err := bind(root, m); err != nil {
			return err
		}
	}
	if s.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("making the root read-only: %w", err)
		}
	}

	// From here on this thread alone carries the process into the Pod's
	// network namespace and the new root, and execve keeps only it.
	runtime.LockOSThread()
	if s.NetNS != "" {
		fd, err := unix.Open(s.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening the Pod's network namespace: %w", err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("joining the Pod's network namespace: %w", err)
		}
		unix.Close(fd)
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.Chdir(wd); err != nil {
		return fmt.Errorf("working folder %s: %w", wd, err)
	}
	argv0, err := lookPath(s.Argv[0], s.Env)
	if err != nil {
		return err
	}
	if s.GID != nil {
		groups := s.Groups
		if groups == nil {
			groups = []int{}
		}
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(*s.GID); err != nil {
			return fmt.Errorf("setgid: %w", err)
		}
	}
	if s.UID != nil {
		if err := syscall.Setuid(*s.UID); err != nil {
			return fmt.Errorf("setuid: %w", err)
		}
	}
	// Changing credentials clears the parent-death signal the agent set;
	// set it again so that the container dies with the agent, and make
	// sure the agent did not die in between.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl: %w", err)
	}
	if os.Getppid() != s.AgentPID {
		return errors.New("the node agent has exited")
	}
	if err := syscall.Exec(argv0, s.Argv, s.Env); err != nil {
		return fmt.Errorf("executing %s: %w", argv0, err)
	}
	return nil
}

// hostDir makes the host's folder d appear read-only at d, or copies the
// symlink when d is one (e.g. /bin -> usr/bin).
func hostDir(root, d string) error {
	fi, err := os.Lstat(d)
	if err != nil {
		return fmt.Errorf("host folder %s: %w", d, err)
	}
	target := filepath.Join(root, d)
	if fi.Mode()&os.ModeSymlink != 0 {
		link, err := os.Readlink(d)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.Symlink(link, target)
	}
	return bind(root, mountSpec{Source: d, Target: d, ReadOnly: true})
}

// bind mounts m.Source at root+m.Target, creating the mount point.
func bind(root string, m mountSpec) error {
	if !filepath.IsAbs(m.Target) {
		return fmt.Errorf("mount target %q is not absolute", m.Target)
	}
	target := filepath.Join(root, filepath.Clean(m.Target))
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("mount source for %s: %w", m.Target, err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("mount point for %s: %w", m.Target, err)
	}
	if fi.IsDir() {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount point for %s: %w", m.Target, err)
		}
	} else if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("mount point for %s: %w", m.Target, err)
		}
		f.Close()
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mounting %s at %s: %w", m.Source, m.Target, err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("making %s read-only: %w", m.Target, err)
		}
	}
	return nil
}

// lookPath resolves a command without a slash through the container's PATH.
func lookPath(cmd string, env []string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, cmd)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in the container's PATH %s", cmd, path)
}
