package qemu

import "path/filepath"

// Layout is where a VM's files live in its directory. The directory is the
// VM's whole host-side state: a restarted agent finds everything it needs
// to adopt the VM there.
type Layout struct {
	// Dir is the VM directory.
	Dir string
	// QMP is QEMU's monitor socket.
	QMP string
	// Console is the serial console socket (one client at a time).
	Console string
	// ConsoleLog is everything the guest printed on its serial console,
	// appended by QEMU whether or not a client is connected.
	ConsoleLog string
	// PIDFile is written (and locked) by QEMU itself.
	PIDFile string
	// Log is QEMU's stdout and stderr.
	Log string
	// Spec is the Spec the VM was launched with (JSON), for adoption.
	Spec string
}

// LayoutOf is the layout of the VM directory dir. The names are short so
// the socket paths fit a Unix socket address.
func LayoutOf(dir string) Layout {
	return Layout{
		Dir:        dir,
		QMP:        filepath.Join(dir, "qmp.sock"),
		Console:    filepath.Join(dir, "console.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"),
		PIDFile:    filepath.Join(dir, "qemu.pid"),
		Log:        filepath.Join(dir, "qemu.log"),
		Spec:       filepath.Join(dir, "spec.json"),
	}
}
