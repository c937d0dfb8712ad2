package plasmavmc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// target is what a wait waits for.
type target struct {
	what string // as the timeout names it: "Running"
	done func(v vm) bool
}

func runningTarget() target {
	return target{what: "Running", done: func(v vm) bool { return v.Status.Phase == plasmavmcv1.PhaseRunning }}
}

// stoppedTarget: stopped, or never placed (then nothing runs it).
func stoppedTarget() target {
	return target{what: "Stopped", done: func(v vm) bool {
		return v.Status.Phase == plasmavmcv1.PhaseStopped || v.Status.Host == "" && v.Status.Phase == plasmavmcv1.PhasePending
	}}
}

// rebootedTarget: the worker carried out the reboot asked for (the
// spec's count after the action) and the guest runs again.
func rebootedTarget(asked int) target {
	return target{what: fmt.Sprintf("Running after reboot %d", asked), done: func(v vm) bool {
		return v.Status.Reboots >= asked && v.Status.Phase == plasmavmcv1.PhaseRunning
	}}
}

// errVMFailed marks a wait that ended with the VM in Error.
var errVMFailed = errors.New("plasmavmc: VM in Error")

// waitVM follows the VM o (as a call returned it) until t holds, showing
// each change on disp; it watches from o's revision, so no change is
// missed and none is polled for. It fails when the VM enters Error, is
// deleted, or timeout passes (naming the phase it was in and what it
// waited for); it returns the VM as last seen.
func waitVM(ctx context.Context, rs *client.Resources, o *api.Object, t target, timeout time.Duration, disp *phaseDisplay) (*api.Object, error) {
	name := o.Metadata.Name
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cur, err := clikit.Decode[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](vms, o)
	if err != nil {
		return o, err
	}
	disp.show(cur.Status.Phase, cur.Status.Message)
	if t.done(cur) {
		return o, nil
	}
	rev := o.Metadata.Revision
	w, err := rs.Watch(ctx, client.WatchOptions{Since: &rev})
	if err != nil {
		return o, fmt.Errorf("%s: watching it: %w", vms.Ref(name), err)
	}
	defer w.Stop()
	var tick <-chan time.Time
	if disp.live {
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		tick = tk.C
	}
	defer disp.clear()
	last := failure(cur)
	for {
		select {
		case <-tick:
			disp.tick()
			continue
		case <-ctx.Done():
			disp.clear()
			if parent.Err() != nil {
				return cur.Raw, parent.Err()
			}
			msg := fmt.Sprintf("%s: still %s after %s (waiting for %s)", vms.Ref(name), clikit.Dash(cur.Status.Phase), timeout, t.what)
			if cur.Status.Message != "" {
				msg += ": " + cur.Status.Message
			}
			if cur.Status.LastError != "" {
				msg += "; last error: " + cur.Status.LastError
			}
			return cur.Raw, errors.New(msg)
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					return cur.Raw, fmt.Errorf("%s: the watch ended: %w", vms.Ref(name), err)
				}
				return cur.Raw, ctx.Err()
			}
			if ev.Object == nil || ev.Object.Metadata.Name != name {
				continue
			}
			if ev.Type == api.EventDeleted {
				disp.clear()
				return ev.Object, fmt.Errorf("%s was deleted while waiting for it to be %s", vms.Ref(name), t.what)
			}
			if ev.Type != api.EventAdded && ev.Type != api.EventModified {
				continue
			}
			next, err := clikit.Decode[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](vms, ev.Object)
			if err != nil {
				return cur.Raw, err
			}
			cur = next
			disp.show(cur.Status.Phase, cur.Status.Message)
			if t.done(cur) {
				return cur.Raw, nil
			}
			// A VM already in Error when the wait began has not yet
			// taken the new request: only a new failure ends the wait.
			if f := failure(cur); f != "" && f != last {
				disp.clear()
				return cur.Raw, fmt.Errorf("%s: %w: %s", vms.Ref(name), errVMFailed, f)
			}
			last = failure(cur)
		}
	}
}

// failure says what went wrong with a VM in Error ("" otherwise).
func failure(v vm) string {
	if v.Status.Phase != plasmavmcv1.PhaseError {
		return ""
	}
	var parts []string
	if v.Status.Message != "" {
		parts = append(parts, v.Status.Message)
	}
	if v.Status.LastError != "" && v.Status.LastError != v.Status.Message {
		parts = append(parts, "last error: "+v.Status.LastError)
	}
	if len(parts) == 0 {
		return "in Error (no message)"
	}
	return strings.Join(parts, "; ")
}
