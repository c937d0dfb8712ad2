// Package plasmavmc holds the CLI verbs of plasmavmc, virtual machines:
// `ultracloud vm|image|worker ...`, which the command tree adds at the top
// level. Each verb reads or writes the kinds of pkg/api/plasmavmcv1 through
// the generic SDK, or, for what is not JSON (image data, the console and
// its scrollback), through plain HTTP with the same credentials.
//
// Like every component's CLI package it talks to the API only through pkg/
// and internal/cli/clikit; it never imports internal/plasmavmc. What the
// server validates (limits, images and networks that exist, immutability)
// stays the server's: the flags here only check their own syntax, so a
// typo is named before anything is sent.
//
// # Waiting
//
// `vm create`, `vm start|stop|reboot` with --wait (create also by default
// when stdout is a terminal) follow the VM with a watch from the revision
// the call returned, print each phase change with its message and the time
// since the call, and end when the VM reaches the phase asked for; a VM in
// Error fails the command with its message and last error, and so does the
// --timeout, naming the phase the VM was in and what it waited for. On a
// terminal a status line shows the time as it passes; elsewhere each
// change is one plain line (on stderr: stdout keeps the command's result).
//
// # The console contract
//
// `vm console NAME` reads the VM, then opens a WebSocket at status.console
// (a path below the endpoint; an absolute ws(s):// or http(s):// URL is
// used as it is), by default
//
//	GET /v1/projects/{project}/vms/{name}/console
//	Upgrade: websocket
//	Authorization: Bearer <token>
//
// A refusal before the upgrade is a problem+json answer, shown as the other
// verbs show errors (404 for an unknown VM, 409 for one that has no console
// yet). After the upgrade, binary messages carry the serial port's raw
// bytes both ways: what the server sends is written to stdout as it is,
// what the user types is sent as it is, one message per read. The server
// may start with a banner or the recent scrollback. Text messages from the
// server are notices for the user and go to stderr; the client sends none.
// The server ends the session with a close frame whose reason says why
// (the VM stopped, another console took over); the client prints that
// reason. Detaching (Ctrl-], or the end of stdin when it is not a
// terminal) closes with status 1000 and the reason "detached"; it never
// affects the VM. `vm console NAME --log` instead reads
//
//	GET /v1/projects/{project}/vms/{name}/consolelog
//
// which answers text/plain: the last output the worker kept.
package plasmavmc

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// NewCmds returns plasmavmc's top-level commands.
func NewCmds(cf *clikit.ClientFlags) []*cobra.Command {
	return []*cobra.Command{newVMCmd(cf), newImageCmd(cf), newWorkerCmd(cf)}
}

// unserved ends the error of an endpoint without plasmavmc's kinds.
const unserved = ": its plasmavmc control plane is not running (see `ultracloud status`)"

// plasmavmc's collections as the verbs address them.
var (
	vms     = clikit.Kind{Kind: plasmavmcv1.VMKind, Collection: plasmavmcv1.VMCollection, Singular: "vm", Unserved: unserved}
	images  = clikit.Kind{Kind: plasmavmcv1.ImageKind, Collection: plasmavmcv1.ImageCollection, Singular: "image", Unserved: unserved}
	workers = clikit.Kind{Kind: plasmavmcv1.WorkerKind, Collection: plasmavmcv1.WorkerCollection, Singular: "worker", Cluster: true, Unserved: unserved}
)

type (
	vm     = clikit.Object[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus]
	image  = clikit.Object[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]
	worker = clikit.Object[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus]
)

// mib shows an amount of MiB as people say it: 512 MiB, 2 GiB, 1.5 GiB.
func mib(n int) string {
	switch {
	case n == 0:
		return ""
	case n >= 1024 && n%1024 == 0:
		return fmt.Sprintf("%d GiB", n/1024)
	case n >= 1024:
		return fmt.Sprintf("%.1f GiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d MiB", n)
}
