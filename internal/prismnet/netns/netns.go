//go:build linux

// Package netns creates, enters and removes named Linux network namespaces
// for prismnet's host agent: the per-network service namespaces and the
// router namespaces, and (in tests) the simulated hosts and workloads.
//
// A named namespace is a bind mount of an nsfs file on a regular file, the
// way `ip netns add` does it, but in any directory (the agent's tests give
// every simulated host its own directory so that two hosts' `ucs-<net>`
// never collide). Do runs a function with the calling OS thread moved into
// a namespace; sockets opened there stay in that namespace after Do returns.
//
// This package only deals with namespaces: it creates no devices and never
// touches a namespace it was not given the path of.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotNamespace is returned when a path exists but is not a mounted
// network namespace.
var ErrNotNamespace = errors.New("netns: not a network namespace")

// Create makes a new, empty network namespace and pins it at path (parent
// directories are created). It is an error if path already exists.
//
// The unshare happens on a dedicated OS thread that is thrown away
// afterwards, so no thread of the process is ever left in the new
// namespace.
func Create(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("netns: create %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("netns: create %s: %w", path, err)
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine ends the runtime ends the
		// thread too, together with its changed namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("netns: create %s: %w", path, err)
	}
	return nil
}

// Delete unmounts and removes the namespace pinned at path. The namespace
// itself lives on while a process or an open file still refers to it.
// Deleting a path that does not exist is not an error.
func Delete(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: delete %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netns: delete %s: %w", path, err)
	}
	return nil
}

// Open returns a handle on the namespace at path ("" is the calling
// thread's namespace). The caller closes it.
func Open(path string) (vnetns.NsHandle, error) {
	if path == "" {
		h, err := vnetns.Get()
		if err != nil {
			return vnetns.None(), fmt.Errorf("netns: open current: %w", err)
		}
		return h, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return vnetns.None(), fmt.Errorf("netns: open %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return vnetns.None(), fmt.Errorf("netns: open %s: %w", path, ErrNotNamespace)
	}
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		return vnetns.None(), fmt.Errorf("netns: open %s: %w", path, err)
	}
	return h, nil
}

// Do runs fn on an OS thread that is in the namespace at path ("" runs fn
// in the current namespace). fn must not start goroutines that expect to
// be in the namespace: only its own thread is. After fn the thread is
// moved back; if that fails the thread is discarded rather than reused.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			errc <- fmt.Errorf("netns: do in %s: current namespace: %w", path, err)
			return // thread discarded
		}
		defer orig.Close()
		if err := vnetns.Set(target); err != nil {
			errc <- fmt.Errorf("netns: do in %s: enter: %w", path, err)
			return
		}
		ferr := fn()
		if err := vnetns.Set(orig); err != nil {
			// Leave the thread locked: the runtime kills it when this
			// goroutine returns, so nobody else runs in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("netns: do in %s: restore: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// List returns the names of the entries in dir that start with prefix
// (namespaces this process or an earlier run pinned there). A missing dir
// is an empty list.
func List(dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
