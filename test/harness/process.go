//go:build linux

package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Phase is where a host's server process is.
type Phase string

// Phases.
const (
	PhaseNotStarted Phase = "not started"
	PhaseRunning    Phase = "running"
	PhaseStopped    Phase = "stopped" // SIGSTOP: alive but frozen
	PhaseExited     Phase = "exited"
)

// ProcState is a snapshot of a host's server process.
type ProcState struct {
	Phase Phase
	// PID is the process ID (that of the last process, once exited).
	PID int
	// Exit says how it ended, e.g. "signal: killed", once exited.
	Exit string
}

func (s ProcState) String() string {
	switch s.Phase {
	case PhaseNotStarted:
		return string(s.Phase)
	case PhaseExited:
		return fmt.Sprintf("exited (pid %d, %s)", s.PID, s.Exit)
	}
	return fmt.Sprintf("%s (pid %d)", s.Phase, s.PID)
}

// Alive reports whether the process exists (running or stopped).
func (s ProcState) Alive() bool { return s.Phase == PhaseRunning || s.Phase == PhaseStopped }

// ErrNotRunning is returned for a signal to a host whose process is not
// alive.
var ErrNotRunning = errors.New("harness: process not running")

// process is one server process: either a child of this process (cmd set,
// reaped by a goroutine that closes done) or one adopted from a state file
// (a detached devcluster process; watched through /proc).
type process struct {
	pid   int
	start uint64 // /proc/<pid>/stat starttime, to tell a reused PID apart

	cmd  *exec.Cmd     // nil if adopted
	done chan struct{} // closed once reaped; nil if adopted
	mu   sync.Mutex
	exit string // how it ended; set before done is closed
}

// launchOptions say how to start a server process.
type launchOptions struct {
	ns       string
	binary   string
	config   string
	logPath  string
	detached bool
	label    string // for the log header, e.g. "host1 start #2"
}

// launch starts the binary inside namespace o.ns through `ip netns exec`,
// which switches namespace and then execs the binary in place, so the PID we
// get is the server's own. Output is appended to o.logPath.
//
// Owned processes (detached false) are reaped by a goroutine added to wg,
// get their own process group (so a terminal's Ctrl-C reaches the harness,
// which then cleans up, not the servers directly) and SIGKILL when this
// process dies. (Linux sends that signal when the forking *thread* exits;
// the Go runtime only ends a thread whose goroutine exits while locked to
// it, which the harness does only when a namespace switch cannot be undone.)
// Detached processes get a session of their own and outlive this process;
// nothing waits for them here.
func launch(o launchOptions, wg *sync.WaitGroup) (*process, error) {
	logf, err := os.OpenFile(o.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: opening log: %w", err)
	}
	defer logf.Close()
	args := []string{"netns", "exec", o.ns, o.binary, "server", "--config", o.config}
	fmt.Fprintf(logf, "=== harness: %s at %s: ip %s\n", o.label, time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))

	cmd := exec.Command("ip", args...)
	cmd.Env = serverEnv(os.Environ())
	cmd.Stdout = logf
	cmd.Stderr = logf
	if o.detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: starting %s in %s: %w", o.binary, o.ns, err)
	}
	p := &process{pid: cmd.Process.Pid}
	if _, start, err := procStat(p.pid); err == nil {
		p.start = start
	}
	if o.detached {
		// Nothing here waits for it: it is reparented when we exit.
		if err := cmd.Process.Release(); err != nil {
			return nil, fmt.Errorf("harness: releasing pid %d: %w", p.pid, err)
		}
		return p, nil
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	wg.Go(func() {
		err := cmd.Wait()
		var exit string
		if cmd.ProcessState != nil {
			exit = cmd.ProcessState.String() // "exit status 1", "signal: killed"
		} else {
			exit = "wait failed: " + err.Error()
		}
		p.mu.Lock()
		p.exit = exit
		p.mu.Unlock()
		close(p.done)
	})
	return p, nil
}

// serverEnv drops ULTRACLOUD_* variables: the server lets the environment
// override its config file, and the harness's config must be what runs.
func serverEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "ULTRACLOUD_") {
			out = append(out, kv)
		}
	}
	return out
}

// adopt returns a process for a PID recorded in a state file.
func adopt(pid int, start uint64) *process {
	if pid <= 0 {
		return nil
	}
	return &process{pid: pid, start: start}
}

// state returns the process's current state.
func (p *process) state() ProcState {
	if p == nil {
		return ProcState{Phase: PhaseNotStarted}
	}
	if p.done != nil {
		select {
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			return ProcState{Phase: PhaseExited, PID: p.pid, Exit: p.exit}
		default:
		}
	}
	st, start, err := procStat(p.pid)
	switch {
	case err != nil:
		return ProcState{Phase: PhaseExited, PID: p.pid, Exit: "gone"}
	case p.start != 0 && start != p.start:
		return ProcState{Phase: PhaseExited, PID: p.pid, Exit: "gone, PID reused"}
	case (st == 'Z' || st == 'X') && p.done != nil:
		// Our reaper's Wait returns at once for a zombie; give it a moment
		// so the state says how the process ended.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			return ProcState{Phase: PhaseExited, PID: p.pid, Exit: p.exit}
		case <-t.C:
		}
		return ProcState{Phase: PhaseExited, PID: p.pid, Exit: "not yet reaped"}
	case st == 'Z' || st == 'X':
		return ProcState{Phase: PhaseExited, PID: p.pid, Exit: "not yet reaped"}
	case st == 'T' || st == 't':
		return ProcState{Phase: PhaseStopped, PID: p.pid}
	}
	return ProcState{Phase: PhaseRunning, PID: p.pid}
}

// signal sends sig if the process is alive.
func (p *process) signal(sig syscall.Signal) error {
	if s := p.state(); !s.Alive() {
		return fmt.Errorf("%w: %s", ErrNotRunning, s)
	}
	var err error
	if p.cmd != nil {
		err = p.cmd.Process.Signal(sig)
	} else {
		err = syscall.Kill(p.pid, sig)
	}
	if err != nil {
		if errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%w: pid %d is gone", ErrNotRunning, p.pid)
		}
		return fmt.Errorf("harness: sending %s to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

// procStat reads the state letter and start time of pid from /proc.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// "pid (comm) S ppid ...": comm may contain spaces and parentheses, so
	// split after the last ')'. Field 3 is the state, field 22 starttime.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("harness: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("harness: /proc/%d/stat: unexpected format", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("harness: /proc/%d/stat: starttime: %w", pid, err)
	}
	return f[0][0], start, nil
}

// pidAlive reports whether pid exists, is not a zombie and (if start is
// non-zero) is the same process that had that start time.
func pidAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, s, err := procStat(pid)
	if err != nil || st == 'Z' || st == 'X' {
		return false
	}
	return start == 0 || s == start
}

// selfStart returns this process's start time, recorded as a run's owner.
func selfStart() uint64 {
	_, s, _ := procStat(os.Getpid())
	return s
}
