package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// ErrInvalidSpec: a Spec that cannot become a QEMU command line. The
// wrapped message names the field and the problem.
var ErrInvalidSpec = errors.New("qemu: invalid spec")

// Accel is the accelerator QEMU runs the guest with.
type Accel string

const (
	// AccelKVM: hardware virtualization through /dev/kvm.
	AccelKVM Accel = "kvm"
	// AccelTCG: QEMU's own translator, in software, one host thread per
	// vCPU (thread=multi).
	AccelTCG Accel = "tcg"
)

// Spec is one VM as QEMU needs it. The agent builds it from the VM
// resource, the image cache, prismnet's ports and the probe; CommandLine
// turns it into arguments without touching the host.
type Spec struct {
	// Name is the VM's name, shown by QEMU (-name) and in process lists:
	// 1-63 characters of [A-Za-z0-9._-].
	Name string `json:"name"`
	// UUID is the VM's identity, visible to the guest as the SMBIOS system
	// UUID (cloud-init reads it); canonical form.
	UUID string `json:"uuid"`
	// VCPUs is the number of virtual CPUs (1-255).
	VCPUs int `json:"vcpus"`
	// MemoryMiB is the guest RAM in MiB (at least 16).
	MemoryMiB int `json:"memoryMiB"`
	// Accel is the accelerator, normally Probe's answer.
	Accel Accel `json:"accel"`
	// CPUModel is QEMU's -cpu; empty means "host" under KVM and QEMU's
	// default model under TCG ("max" is markedly slower there).
	CPUModel string `json:"cpuModel,omitempty"`

	// Kernel, Initrd and Cmdline select direct kernel boot: QEMU loads
	// the kernel (and initrd) itself, no bootloader in the image. Empty
	// Kernel means disk boot from the disk marked Boot.
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`

	// Disks are virtio-blk devices, in this order on the PCI bus (the
	// first is /dev/vda in a Linux guest).
	Disks []Disk `json:"disks,omitempty"`
	// NICs are virtio-net devices on existing taps.
	NICs []NIC `json:"nics,omitempty"`
	// RNG adds a virtio-rng device fed from the host's /dev/urandom, so a
	// guest has entropy early (SSH host keys, cloud-init).
	RNG bool `json:"rng,omitempty"`
	// Paused leaves the vCPUs stopped after Launch; Instance.Cont starts
	// them. The agent uses it to attach the console before the guest
	// prints anything.
	Paused bool `json:"paused,omitempty"`
}

// Disk is one virtio-blk disk.
type Disk struct {
	// ID names the disk inside QEMU (device id; the drive is
	// "drive-<ID>") and in BlockResize: 1-32 characters of [a-z0-9-],
	// starting with a letter.
	ID string `json:"id"`
	// Path is an absolute file path; or an NBD export as QEMU spells it
	// ("nbd:unix:/run/x.sock:exportname=vol" or "nbd://host:port/vol");
	// or QEMU's "json:{...}" form. The json: object holds the options of
	// the format node (Format's), so the protocol node goes in its "file"
	// member: json:{"file":{"driver":"nbd","server":{"type":"unix",
	// "path":"/run/x.sock"},"export":"vol"}}.
	Path string `json:"path"`
	// Format is "raw" or "qcow2", always explicit: letting QEMU probe the
	// format of a guest-writable raw disk lets the guest pretend to be a
	// qcow2 with a backing file of its choosing.
	Format string `json:"format"`
	// ReadOnly attaches the disk read-only (a config drive, a shared base).
	ReadOnly bool `json:"readOnly,omitempty"`
	// Cache is QEMU's cache mode: "" (QEMU's default, writeback), "none"
	// (O_DIRECT: needs a filesystem that supports it, not tmpfs),
	// "writeback", "writethrough", "directsync" or "unsafe".
	Cache string `json:"cache,omitempty"`
	// AIO is "" (QEMU's default, threads), "threads", "native" (needs
	// Cache "none" or "directsync") or "io_uring".
	AIO string `json:"aio,omitempty"`
	// Boot makes this the boot disk of a disk-booted VM (bootindex 1).
	Boot bool `json:"boot,omitempty"`
	// Serial is the disk's serial number as the guest sees it
	// (/dev/disk/by-id/virtio-<Serial>); at most 20 of [A-Za-z0-9-_].
	Serial string `json:"serial,omitempty"`
}

// NIC is one virtio-net device on a tap the network agent created.
type NIC struct {
	// ID names the device inside QEMU (the netdev is "netdev-<ID>"):
	// 1-32 characters of [a-z0-9-], starting with a letter.
	ID string `json:"id"`
	// Tap is the name of an existing tap device (prismnet's uct-...).
	// QEMU opens it by name and never creates or configures it
	// (script=no, downscript=no).
	Tap string `json:"tap"`
	// MAC is the guest's MAC address (unicast, e.g. 52:54:00:12:34:56).
	MAC string `json:"mac"`
	// Vhost moves the data path into the host kernel (vhost-net); needs
	// /dev/vhost-net.
	Vhost bool `json:"vhost,omitempty"`
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,63}$`)
	idRE     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	serialRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,20}$`)
	tapRE    = regexp.MustCompile(`^[A-Za-z0-9._-]{1,15}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// Validate checks everything CommandLine relies on, naming the first
// field that is wrong.
func (s Spec) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return invalid("name %q: want 1-63 characters of letters, digits, '.', '_', '-'", s.Name)
	}
	if u, err := uuid.Parse(s.UUID); err != nil || u.String() != strings.ToLower(s.UUID) {
		return invalid("uuid %q: want the canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s.UUID)
	}
	if s.VCPUs < 1 || s.VCPUs > 255 {
		return invalid("vcpus %d: want 1-255", s.VCPUs)
	}
	if s.MemoryMiB < 16 {
		return invalid("memoryMiB %d: want at least 16", s.MemoryMiB)
	}
	if s.Accel != AccelKVM && s.Accel != AccelTCG {
		return invalid("accel %q: want %q or %q", s.Accel, AccelKVM, AccelTCG)
	}
	if s.CPUModel != "" && !nameRE.MatchString(s.CPUModel) {
		return invalid("cpuModel %q: want a QEMU CPU model name", s.CPUModel)
	}
	if s.Kernel == "" && (s.Initrd != "" || s.Cmdline != "") {
		return invalid("initrd and cmdline need a kernel (direct kernel boot)")
	}
	for _, p := range []struct{ field, path string }{{"kernel", s.Kernel}, {"initrd", s.Initrd}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return invalid("%s %q: want an absolute path", p.field, p.path)
		}
	}
	if strings.ContainsAny(s.Cmdline, "\x00\n") {
		return invalid("cmdline contains a NUL or newline")
	}
	ids := map[string]string{}
	boot := 0
	for i, d := range s.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if !idRE.MatchString(d.ID) {
			return invalid("%s.id %q: want 1-32 of [a-z0-9-], starting with a letter", field, d.ID)
		}
		if prev, dup := ids[d.ID]; dup {
			return invalid("%s.id %q: already used by %s", field, d.ID, prev)
		}
		ids[d.ID] = field
		if err := validateDiskPath(d.Path); err != nil {
			return invalid("%s.path: %v", field, err)
		}
		if d.Format != "raw" && d.Format != "qcow2" {
			return invalid("%s.format %q: want raw or qcow2", field, d.Format)
		}
		switch d.Cache {
		case "", "none", "writeback", "writethrough", "directsync", "unsafe":
		default:
			return invalid("%s.cache %q: want none, writeback, writethrough, directsync or unsafe", field, d.Cache)
		}
		switch d.AIO {
		case "", "threads", "io_uring":
		case "native":
			if d.Cache != "none" && d.Cache != "directsync" {
				return invalid("%s.aio native needs cache none or directsync (O_DIRECT), not %q", field, d.Cache)
			}
		default:
			return invalid("%s.aio %q: want threads, native or io_uring", field, d.AIO)
		}
		if d.Serial != "" && !serialRE.MatchString(d.Serial) {
			return invalid("%s.serial %q: want at most 20 of [A-Za-z0-9_-]", field, d.Serial)
		}
		if d.Boot {
			boot++
			if s.Kernel != "" {
				return invalid("%s is marked boot, but the VM boots a kernel directly", field)
			}
		}
	}
	if boot > 1 {
		return invalid("%d disks are marked boot; at most one can be", boot)
	}
	if s.Kernel == "" && boot == 0 {
		return invalid("no boot source: set kernel (direct kernel boot) or mark one disk boot")
	}
	taps := map[string]string{}
	for i, n := range s.NICs {
		field := fmt.Sprintf("nics[%d]", i)
		if !idRE.MatchString(n.ID) {
			return invalid("%s.id %q: want 1-32 of [a-z0-9-], starting with a letter", field, n.ID)
		}
		if prev, dup := ids[n.ID]; dup {
			return invalid("%s.id %q: already used by %s", field, n.ID, prev)
		}
		ids[n.ID] = field
		if !tapRE.MatchString(n.Tap) {
			return invalid("%s.tap %q: want an interface name of 1-15 characters", field, n.Tap)
		}
		if prev, dup := taps[n.Tap]; dup {
			return invalid("%s.tap %q: already used by %s", field, n.Tap, prev)
		}
		taps[n.Tap] = field
		mac, err := net.ParseMAC(n.MAC)
		if err != nil || len(mac) != 6 {
			return invalid("%s.mac %q: want a 6-byte MAC such as 52:54:00:12:34:56", field, n.MAC)
		}
		if mac[0]&1 != 0 {
			return invalid("%s.mac %q: a multicast address cannot be a NIC's", field, n.MAC)
		}
	}
	return nil
}

func validateDiskPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case strings.ContainsAny(p, "\x00\n"):
		return errors.New("contains a NUL or newline")
	case strings.HasPrefix(p, "json:"):
		var obj map[string]any
		if err := json.Unmarshal([]byte(p[len("json:"):]), &obj); err != nil {
			return fmt.Errorf("json: form is not a JSON object: %w", err)
		}
		// Without "file", QEMU's error ("A block device must be specified
		// for file") does not say what is missing.
		if _, ok := obj["file"].(map[string]any); !ok {
			return errors.New(`json: form needs a "file" object holding the protocol node, e.g. json:{"file":{"driver":"nbd",...}}`)
		}
	case strings.HasPrefix(p, "nbd:unix:"):
		sock, _, _ := strings.Cut(p[len("nbd:unix:"):], ":")
		if !filepath.IsAbs(sock) {
			return fmt.Errorf("%q: the NBD socket path must be absolute", p)
		}
	case strings.HasPrefix(p, "nbd:"), strings.HasPrefix(p, "nbd://"), strings.HasPrefix(p, "nbd+unix://"):
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q: want an absolute file path, nbd:... or json:{...}", p)
	}
	return nil
}

// maxSocketPath is the longest path a Unix socket address holds
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// CommandLine is the QEMU argument list (without the program name) for
// spec, with its sockets, logs and pid file in dir. A pure function: it
// reads no file and checks no device, so it is golden-tested. The
// arguments are in a fixed order, one option and its value per pair.
func CommandLine(spec Spec, dir string) ([]string, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("qemu: VM directory %q: want an absolute path", dir)
	}
	l := LayoutOf(dir)
	for _, p := range []string{l.QMP, l.Console} {
		if len(p) > maxSocketPath {
			return nil, fmt.Errorf("qemu: socket path %q is %d bytes; a Unix socket allows %d: use a shorter VM directory", p, len(p), maxSocketPath)
		}
	}

	a := []string{
		"-name", "guest=" + esc(spec.Name) + ",debug-threads=on",
		"-uuid", strings.ToLower(spec.UUID),
		// Nothing from the host's QEMU configuration, no default devices:
		// the guest gets exactly what is listed here.
		"-no-user-config", "-nodefaults",
		"-machine", "q35",
	}
	switch spec.Accel {
	case AccelKVM:
		a = append(a, "-accel", "kvm")
	case AccelTCG:
		a = append(a, "-accel", "tcg,thread=multi")
	}
	cpu := spec.CPUModel
	if cpu == "" && spec.Accel == AccelKVM {
		cpu = "host"
	}
	if cpu != "" {
		a = append(a, "-cpu", cpu)
	}
	a = append(a,
		"-smp", strconv.Itoa(spec.VCPUs),
		"-m", strconv.Itoa(spec.MemoryMiB)+"M",
		"-display", "none",
		// Timestamps on QEMU's own messages in qemu.log.
		"-msg", "timestamp=on",
		// The vCPUs start stopped; Launch sends "cont" once QMP is
		// connected, so no event and no console output can precede us.
		"-S",
		"-pidfile", l.PIDFile,
		// QMP: a listening socket that QEMU keeps for its whole life, so
		// whichever agent process comes next can connect (one client at a
		// time; a second waits until the first disconnects).
		"-chardev", "socket,id=qmp,path="+esc(l.QMP)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		// The serial console: a socket for the interactive console, and
		// everything the guest prints also appended to console.log, the
		// scrollback, whether or not anyone is connected.
		"-chardev", "socket,id=console,path="+esc(l.Console)+",server=on,wait=off,logfile="+esc(l.ConsoleLog)+",logappend=on",
		"-serial", "chardev:console",
	)
	if spec.Kernel != "" {
		a = append(a, "-kernel", spec.Kernel)
		if spec.Initrd != "" {
			a = append(a, "-initrd", spec.Initrd)
		}
		if spec.Cmdline != "" {
			a = append(a, "-append", spec.Cmdline)
		}
	}
	for _, d := range spec.Disks {
		drive := "if=none,id=drive-" + d.ID + ",file=" + esc(d.Path) + ",format=" + d.Format
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		if d.Cache != "" {
			drive += ",cache=" + d.Cache
		}
		if d.AIO != "" {
			drive += ",aio=" + d.AIO
		}
		dev := "virtio-blk-pci,id=" + d.ID + ",drive=drive-" + d.ID
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		if d.Boot {
			dev += ",bootindex=1"
		}
		a = append(a, "-drive", drive, "-device", dev)
	}
	for _, n := range spec.NICs {
		netdev := "tap,id=netdev-" + n.ID + ",ifname=" + n.Tap + ",script=no,downscript=no"
		if n.Vhost {
			netdev += ",vhost=on"
		}
		// romfile= (empty): no iPXE option ROM. Nothing here boots from
		// the network, and the ROM costs boot time and a file QEMU must find.
		a = append(a, "-netdev", netdev,
			"-device", "virtio-net-pci,id="+n.ID+",netdev=netdev-"+n.ID+",mac="+strings.ToLower(n.MAC)+",romfile=")
	}
	if spec.RNG {
		a = append(a, "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0")
	}
	return a, nil
}

// esc escapes a value inside QEMU's comma-separated options, where a
// literal comma is written twice.
func esc(v string) string { return strings.ReplaceAll(v, ",", ",,") }
