// Package qemu runs QEMU for plasmavmc's worker agent: it decides the
// accelerator (Probe), turns a VM's Spec into a QEMU command line
// (CommandLine, a pure function), starts QEMU detached from the agent
// (Host.Launch), reconnects to one a previous agent process started
// (Host.Adopt), drives it over QMP (Instance: status, cont, ACPI power-down,
// reset, block resize, kill) and reports how it ended (Exit: a crash versus
// an orderly shutdown, from the SHUTDOWN event and the exit status). It
// also creates qcow2 overlays on cached base images (Host.Overlay).
//
// A VM's host-side state is one directory (Layout): QMP and console
// sockets, the console log (the scrollback), QEMU's pid file and log, and
// the Spec it was launched with. QEMU outlives the agent: it runs in its own
// session with no pipe to the agent, and Instance.Close releases it without
// stopping it, so an agent restart or upgrade adopts every VM again.
//
// What it must not do: decide which VMs should run (the agent's loop does),
// create or configure taps, bridges or addresses (prismnet's agent creates
// the taps; QEMU only opens them by name), fetch or convert images, build
// cloud-init data, or kill a QEMU except when asked (Kill, or a Launch
// that failed half-way).
package qemu
