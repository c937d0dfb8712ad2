package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/internal/plasmavmc/qmp"
	"golang.org/x/sys/unix"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrRunning: the VM directory already has a live QEMU.
	ErrRunning = errors.New("qemu: a QEMU is already running in this VM directory")
	// ErrNotRunning: Adopt found no live QEMU of this VM directory.
	ErrNotRunning = errors.New("qemu: no running QEMU in this VM directory")
	// ErrExited: QEMU exited while Launch was starting it.
	ErrExited = errors.New("qemu: QEMU exited during start-up")
	// ErrReleased: the Instance was closed (released) before QEMU exited.
	ErrReleased = errors.New("qemu: instance released")
)

// Host is this machine's QEMU installation. The zero value uses
// qemu-system-x86_64 and qemu-img from PATH and discards logs.
type Host struct {
	// QEMU is the emulator binary; "" means qemu-system-x86_64 on PATH.
	QEMU string
	// QEMUImg is QEMU's disk image tool; "" means qemu-img on PATH.
	QEMUImg string
	// Logger receives the package's log lines; nil discards them.
	Logger *slog.Logger
}

func (h *Host) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

func (h *Host) qemuBinary() string {
	if h.QEMU == "" {
		return "qemu-system-x86_64"
	}
	return h.QEMU
}

// Launch starts QEMU for spec with its files in dir (created if needed),
// connects QMP and, unless spec.Paused, starts the vCPUs.
//
// QEMU runs in a session of its own (setsid), with its output appended to
// qemu.log and not to a pipe of ours: nothing ties its life to the calling
// process, so it keeps running when the agent exits, crashes or is
// upgraded, and a new agent adopts it (Adopt). -daemonize is not used: it
// would make QEMU a grandchild whose exit status no one collects; as our
// child, this process learns how it ended (Exit.StatusKnown). If start-up
// fails after QEMU started, Launch kills it: a half-started VM is never
// left behind.
func (h *Host) Launch(ctx context.Context, spec Spec, dir string) (*Instance, error) {
	args, err := CommandLine(spec, dir)
	if err != nil {
		return nil, err
	}
	l := LayoutOf(dir)
	if pid, err := readPIDFile(l.PIDFile); err == nil && isQEMUOf(pid, l.QMP) == nil {
		return nil, fmt.Errorf("%w: %s (pid %d)", ErrRunning, dir, pid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu: VM directory: %w", err)
	}
	// The pid file stays: QEMU locks it, so a second QEMU on this
	// directory fails to start instead of running beside the first.
	for _, p := range []string{l.QMP, l.Console} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("qemu: removing the stale %s: %w", p, err)
		}
	}
	specJSON, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("qemu: encoding the spec: %w", err)
	}
	if err := os.WriteFile(l.Spec, append(specJSON, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("qemu: writing the spec: %w", err)
	}
	logf, err := os.OpenFile(l.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu: opening qemu.log: %w", err)
	}
	fmt.Fprintf(logf, "%s launching %s\n", time.Now().UTC().Format(time.RFC3339Nano), h.qemuBinary())

	// Not exec.CommandContext: ctx bounds the start-up, never QEMU's life.
	cmd := exec.Command(h.qemuBinary(), args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("qemu: starting %s: %w", h.qemuBinary(), err)
	}
	pid := cmd.Process.Pid
	proc, err := openProcess(pid)
	if err != nil {
		// Cannot watch it, so it must not run unwatched.
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	// From here this package reaps the child itself (see process.reap).
	_ = cmd.Process.Release()
	log := h.logger().With("vm", spec.Name, "pid", pid)

	fail := func(err error) (*Instance, error) {
		_ = proc.signal(syscall.SIGKILL)
		proc.waitExit()
		proc.reap()
		proc.close()
		log.Warn("qemu start-up failed", "err", err)
		return nil, err
	}
	client, err := dialUntilUp(ctx, l, proc)
	if err != nil {
		return fail(err)
	}
	inst := newInstance(l, spec, proc, client, false, log)
	if !spec.Paused {
		if err := inst.Cont(ctx); err != nil {
			err = fmt.Errorf("qemu: starting the vCPUs: %w", err)
			// The instance's watcher owns the process now: kill, let it
			// reap, then release.
			_ = proc.signal(syscall.SIGKILL)
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = inst.Wait(wctx)
			cancel()
			inst.Close()
			log.Warn("qemu start-up failed", "err", err)
			return nil, err
		}
	}
	log.Info("qemu launched", "accel", spec.Accel, "dir", dir)
	return inst, nil
}

// dialUntilUp connects to the QMP socket of a QEMU that is starting,
// retrying until it listens, the process exits or ctx ends.
func dialUntilUp(ctx context.Context, l Layout, proc *process) (*qmp.Client, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if !proc.alive() {
			ws, _ := proc.reap()
			return nil, fmt.Errorf("%w (%s): %s", ErrExited, describeStatus(ws), logTail(l.Log))
		}
		c, err := qmp.Dial(ctx, l.QMP, qmp.Options{})
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu: QMP did not come up: %w; qemu.log: %s", err, logTail(l.Log))
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// Adopt connects to the running QEMU of the VM directory dir without
// disturbing it: no signal, no command beyond the QMP handshake. It checks
// that the pid file names a live QEMU whose QMP socket is this
// directory's, so a stale pid file never adopts an unrelated process.
//
// QMP accepts one client at a time: if the previous agent process is still
// connected (hung rather than dead), the handshake waits, and Adopt fails
// when ctx ends.
func (h *Host) Adopt(ctx context.Context, dir string) (*Instance, error) {
	l := LayoutOf(dir)
	pid, err := readPIDFile(l.PIDFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotRunning, dir, err)
	}
	// The pidfd first: from then on the number cannot be reused under us.
	proc, err := openProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotRunning, dir, err)
	}
	if err := isQEMUOf(pid, l.QMP); err != nil {
		proc.close()
		return nil, fmt.Errorf("%w: %s: %w", ErrNotRunning, dir, err)
	}
	if !proc.alive() {
		proc.reap()
		proc.close()
		return nil, fmt.Errorf("%w: %s: pid %d has exited", ErrNotRunning, dir, pid)
	}
	var spec Spec
	b, err := os.ReadFile(l.Spec)
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		proc.close()
		return nil, fmt.Errorf("qemu: adopting %s: reading spec.json: %w", dir, err)
	}
	client, err := qmp.Dial(ctx, l.QMP, qmp.Options{})
	if err != nil {
		proc.close()
		return nil, fmt.Errorf("qemu: adopting %s (pid %d): %w (is another client still connected to QMP?)", dir, pid, err)
	}
	log := h.logger().With("vm", spec.Name, "pid", pid)
	log.Info("qemu adopted", "dir", dir)
	return newInstance(l, spec, proc, client, true, log), nil
}

// Shutdown is QEMU's SHUTDOWN event: the machine is going away.
type Shutdown struct {
	// Guest is true when the guest asked for it (ACPI power-off, panic).
	Guest bool `json:"guest"`
	// Reason is QEMU's reason: guest-shutdown, guest-panic,
	// host-qmp-quit, host-signal, host-ui, ...
	Reason string `json:"reason"`
	// At is when QEMU emitted the event.
	At time.Time `json:"at"`
}

// Exit is how a QEMU process ended.
type Exit struct {
	// At is when the exit was noticed.
	At time.Time
	// StatusKnown is true when this process collected the exit status
	// (it launched QEMU). An adopted QEMU is not our child: its status
	// goes to init, and only its SHUTDOWN event and its disappearance are
	// known.
	StatusKnown bool
	// Code is the exit code (when StatusKnown and not signalled).
	Code int
	// Signal is the signal that killed QEMU (when StatusKnown), or 0.
	Signal syscall.Signal
	// Shutdown is the SHUTDOWN event QEMU sent before exiting; nil when
	// it died without one.
	Shutdown *Shutdown
	// Killed is true when Kill had to SIGKILL it.
	Killed bool
}

// Crashed distinguishes a crash from an orderly end. QEMU sends SHUTDOWN
// before every orderly exit (guest power-off, quit, SIGTERM/SIGINT/SIGHUP);
// dying without one means it was killed (SIGKILL, the OOM killer) or
// crashed (SIGSEGV, abort). A guest panic, or a non-zero status after the
// event, is a crash too. Kill's own SIGKILL is not.
func (e Exit) Crashed() bool {
	switch {
	case e.Killed:
		return false
	case e.Shutdown == nil, e.Shutdown.Reason == "guest-panic":
		return true
	case e.StatusKnown && (e.Signal != 0 || e.Code != 0):
		return true
	}
	return false
}

// String says how QEMU ended, for the VM's status and events.
func (e Exit) String() string {
	status := "exit status unknown (not our child)"
	if e.StatusKnown {
		if e.Signal != 0 {
			status = "killed by signal " + e.Signal.String()
		} else {
			status = fmt.Sprintf("exit status %d", e.Code)
		}
	}
	switch {
	case e.Killed:
		return "killed by the agent with SIGKILL (" + status + ")"
	case e.Shutdown == nil:
		return "crashed: QEMU ended without a SHUTDOWN event (" + status + ")"
	case e.Shutdown.Reason == "guest-panic":
		return "crashed: the guest panicked (" + status + ")"
	case e.Crashed():
		return "crashed after SHUTDOWN (" + e.Shutdown.Reason + ", " + status + ")"
	case e.Shutdown.Reason == "guest-shutdown":
		return "the guest powered off (" + status + ")"
	case e.Shutdown.Reason == "host-qmp-quit":
		return "stopped by quit over QMP (" + status + ")"
	case e.Shutdown.Reason == "host-signal":
		return "QEMU was terminated by a signal on the host (" + status + ")"
	}
	return "shut down: " + e.Shutdown.Reason + " (" + status + ")"
}

// Status is QEMU's run state (query-status).
type Status struct {
	// Running is true while the vCPUs run.
	Running bool `json:"running"`
	// State is QEMU's run state: running, paused, prelaunch, shutdown,
	// guest-panicked, internal-error, io-error, ...
	State string `json:"status"`
}

// Instance is one running QEMU, launched or adopted by this process.
// Its methods are safe for concurrent use.
type Instance struct {
	layout  Layout
	spec    Spec
	proc    *process
	client  *qmp.Client
	adopted bool
	log     *slog.Logger
	subs    *qmp.Subscription

	mu       sync.Mutex
	shutdown *Shutdown
	killed   bool
	exit     Exit

	exited     chan struct{}
	releasedCh chan struct{}
	eventsEnd  chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

func newInstance(l Layout, spec Spec, proc *process, client *qmp.Client, adopted bool, log *slog.Logger) *Instance {
	i := &Instance{
		layout:     l,
		spec:       spec,
		proc:       proc,
		client:     client,
		adopted:    adopted,
		log:        log,
		subs:       client.Subscribe(16, "SHUTDOWN"),
		exited:     make(chan struct{}),
		releasedCh: make(chan struct{}),
		eventsEnd:  make(chan struct{}),
	}
	i.wg.Add(2)
	go i.watchEvents()
	go i.watchProcess()
	return i
}

// watchEvents records SHUTDOWN events until the QMP connection ends.
func (i *Instance) watchEvents() {
	defer i.wg.Done()
	defer close(i.eventsEnd)
	for ev := range i.subs.C() {
		var s Shutdown
		_ = json.Unmarshal(ev.Data, &s)
		s.At = ev.Time
		i.mu.Lock()
		i.shutdown = &s
		i.mu.Unlock()
		i.log.Info("qemu shutdown event", "guest", s.Guest, "reason", s.Reason)
	}
}

// watchProcess waits for QEMU to exit and records how.
func (i *Instance) watchProcess() {
	defer i.wg.Done()
	if !i.proc.waitExit() {
		return // released
	}
	// QEMU writes SHUTDOWN before it exits, and the QMP connection ends
	// with the process: once the event watcher has drained the
	// subscription, the event (if any) is recorded.
	select {
	case <-i.eventsEnd:
	case <-time.After(2 * time.Second):
		i.client.Close()
		<-i.eventsEnd
	}
	ws, known := i.proc.reap()
	i.mu.Lock()
	e := Exit{At: time.Now(), StatusKnown: known, Shutdown: i.shutdown, Killed: i.killed}
	if known {
		if ws.Signaled() {
			e.Signal = ws.Signal()
		} else {
			e.Code = ws.ExitStatus()
		}
	}
	i.exit = e
	i.mu.Unlock()
	close(i.exited)
	if e.Crashed() {
		i.log.Warn("qemu exited", "exit", e.String())
	} else {
		i.log.Info("qemu exited", "exit", e.String())
	}
}

// PID is QEMU's process id.
func (i *Instance) PID() int { return i.proc.pid }

// Layout is where the VM's files are.
func (i *Instance) Layout() Layout { return i.layout }

// Spec is the Spec QEMU was launched with (read back from spec.json when
// adopted).
func (i *Instance) Spec() Spec { return i.spec }

// Adopted is true when this Instance came from Adopt, not Launch.
func (i *Instance) Adopted() bool { return i.adopted }

// QMP is the instance's QMP client, for commands and events this package
// does not wrap. Its Events() channel is the caller's: the Instance keeps
// a subscription of its own.
func (i *Instance) QMP() *qmp.Client { return i.client }

// Exited is closed once QEMU has exited and Wait's Exit is known.
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// Wait blocks until QEMU exits and says how, or until ctx ends or the
// Instance is released (ErrReleased).
func (i *Instance) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-i.exited:
		return i.exitInfo(), nil
	default:
	}
	select {
	case <-i.exited:
		return i.exitInfo(), nil
	case <-i.releasedCh:
		return Exit{}, ErrReleased
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

func (i *Instance) exitInfo() Exit {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.exit
}

// Status is query-status.
func (i *Instance) Status(ctx context.Context) (Status, error) {
	var s Status
	if err := i.client.Execute(ctx, "query-status", nil, &s); err != nil {
		return Status{}, fmt.Errorf("qemu: %s: %w", i.spec.Name, err)
	}
	return s, nil
}

// Cont starts (or resumes) the vCPUs.
func (i *Instance) Cont(ctx context.Context) error {
	return i.execute(ctx, "cont", nil)
}

// Powerdown presses the ACPI power button (system_powerdown). The guest
// decides what to do; a guest that ignores it keeps running, so the
// caller falls back to Kill after its own timeout.
func (i *Instance) Powerdown(ctx context.Context) error {
	return i.execute(ctx, "system_powerdown", nil)
}

// Reset is a hard reset of the machine (system_reset); the guest reboots
// without shutting down and QEMU keeps running.
func (i *Instance) Reset(ctx context.Context) error {
	return i.execute(ctx, "system_reset", nil)
}

// BlockResize grows (or shrinks) the disk with the given Disk.ID to bytes
// while the guest runs; a virtio-blk guest sees the new capacity at once.
func (i *Instance) BlockResize(ctx context.Context, diskID string, bytes int64) error {
	return i.execute(ctx, "block_resize", map[string]any{"device": "drive-" + diskID, "size": bytes})
}

func (i *Instance) execute(ctx context.Context, cmd string, args any) error {
	if err := i.client.Execute(ctx, cmd, args, nil); err != nil {
		return fmt.Errorf("qemu: %s: %w", i.spec.Name, err)
	}
	return nil
}

// Kill stops QEMU now, without asking the guest: "quit" over QMP, and if
// QEMU has not exited within a few seconds (or QMP does not answer),
// SIGKILL. It returns how QEMU ended.
func (i *Instance) Kill(ctx context.Context) (Exit, error) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := i.client.Execute(qctx, "quit", nil, nil)
	cancel()
	if err != nil && !errors.Is(err, qmp.ErrConnectionLost) {
		i.log.Warn("qemu quit failed; killing", "err", err)
	}
	if err == nil || errors.Is(err, qmp.ErrConnectionLost) {
		select {
		case <-i.exited:
			return i.exitInfo(), nil
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		}
	}
	select {
	case <-i.exited:
		return i.exitInfo(), nil
	default:
	}
	i.mu.Lock()
	i.killed = true
	i.mu.Unlock()
	if err := i.proc.signal(syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return Exit{}, fmt.Errorf("qemu: %s: %w", i.spec.Name, err)
	}
	return i.Wait(ctx)
}

// DialConsole connects to the serial console socket. QEMU serves one
// console client at a time; the agent keeps one connection and fans it
// out. Output while nobody is connected still reaches console.log.
func (i *Instance) DialConsole(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", i.layout.Console)
	if err != nil {
		return nil, fmt.Errorf("qemu: %s: console: %w", i.spec.Name, err)
	}
	return c, nil
}

// Close releases the Instance: it closes the QMP connection and stops
// watching the process, and never signals or stops QEMU, which keeps
// running for the next Adopt. Idempotent.
func (i *Instance) Close() error {
	i.closeOnce.Do(func() {
		close(i.releasedCh)
		i.proc.stop()
		i.client.Close()
		i.wg.Wait()
		i.proc.close()
	})
	return nil
}

// describeStatus renders a wait status for an error message.
func describeStatus(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// logTail is the last lines of QEMU's log, for start-up errors.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no qemu.log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 2048
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(bytes.ToValidUTF8(b, nil))), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
