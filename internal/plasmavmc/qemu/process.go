package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is a handle on one QEMU process, child or not: a pidfd, which
// names the process itself rather than its number, so a signal can never
// reach a process that later got the same pid, and which becomes readable
// when the process exits (for any process, not only our children).
type process struct {
	pid   int
	pidfd int
	// stopR/stopW interrupt watch (a pipe: poll waits on both ends).
	stopR, stopW int
}

func openProcess(pid int) (*process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pipe: %w", err)
	}
	return &process{pid: pid, pidfd: fd, stopR: p[0], stopW: p[1]}, nil
}

// signal sends sig to the process (not to whatever has its pid now).
func (p *process) signal(sig syscall.Signal) error {
	if err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0); err != nil {
		return fmt.Errorf("signal %s to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

// waitExit blocks until the process has exited (true) or stop is called
// (false).
func (p *process) waitExit() bool {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}, {Fd: int32(p.stopR), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
		if fds[1].Revents != 0 {
			return false
		}
		if fds[0].Revents != 0 {
			return true
		}
	}
}

// stop makes a pending waitExit return false.
func (p *process) stop() { _, _ = unix.Write(p.stopW, []byte{1}) }

// reap collects the exit status if the process is our child (launched by
// this agent process); known is false for an adopted QEMU, whose parent is
// init or a subreaper.
func (p *process) reap() (ws unix.WaitStatus, known bool) {
	for {
		got, err := unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return ws, err == nil && got == p.pid
	}
}

// alive reports whether the process has not exited yet.
func (p *process) alive() bool {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 0
}

func (p *process) close() {
	unix.Close(p.pidfd)
	unix.Close(p.stopR)
	unix.Close(p.stopW)
}

// readPIDFile reads the pid QEMU wrote.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s holds %q, not a pid", path, bytes.TrimSpace(b))
	}
	return pid, nil
}

// isQEMUOf checks that pid is a QEMU whose QMP socket is qmpPath, so a pid
// file left behind never makes us adopt an unrelated process that reused
// the number.
func isQEMUOf(pid int, qmpPath string) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || !strings.Contains(args[0], "qemu-system") {
		return fmt.Errorf("pid %d is %q, not QEMU", pid, args[0])
	}
	want := "path=" + esc(qmpPath) + ","
	for _, a := range args {
		if strings.HasPrefix(a, "socket,id=qmp,") && strings.Contains(a, want) {
			return nil
		}
	}
	return fmt.Errorf("pid %d is a QEMU of another VM (its QMP socket is not %s)", pid, qmpPath)
}
