package qemu

import (
	"strings"
	"testing"
)

// splitOpts parses a QEMU option string the way QEMU does: key=value pairs
// separated by ',', a doubled ",," being a literal comma in a value. The
// first element may be a bare value (the driver).
func splitOpts(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(parts, cur.String())
}

// FuzzCommandLine: whatever the user-controlled strings of a spec are, a
// spec that CommandLine accepts yields option strings whose keys are only
// the ones this package writes, and whose file= value is the disk path
// exactly: a name, path or MAC can never inject a QEMU option.
func FuzzCommandLine(f *testing.F) {
	f.Add("web-1", "/var/lib/vm/root.qcow2", "uct-abc", "52:54:00:00:00:01", "console=ttyS0", "/srv/vms/a")
	f.Add("a", "/x,file=/etc/shadow", "uct-a", "52:54:00:00:00:02", "x,y", "/d,,e")
	f.Add("b", `json:{"file":{"driver":"file","filename":"/a,b"}}`, "t", "02:00:00:00:00:01", "", "/v")
	f.Add("c", "nbd:unix:/run/s.sock:exportname=v,format=qcow2", "t0", "52:54:00:00:00:03", "", "/v")
	allowed := map[string]bool{
		"guest": true, "debug-threads": true, "id": true, "path": true, "server": true, "wait": true,
		"logfile": true, "logappend": true, "if": true, "file": true, "format": true, "readonly": true,
		"cache": true, "aio": true, "drive": true, "serial": true, "bootindex": true, "ifname": true,
		"script": true, "downscript": true, "vhost": true, "netdev": true, "mac": true, "romfile": true,
		"chardev": true, "mode": true, "filename": true, "rng": true, "thread": true, "timestamp": true,
	}
	f.Fuzz(func(t *testing.T, name, path, tap, mac, cmdline, dir string) {
		s := Spec{
			Name: name, UUID: testUUID, VCPUs: 1, MemoryMiB: 64, Accel: AccelTCG,
			Kernel: "/boot/vmlinuz", Cmdline: cmdline, RNG: true,
			Disks: []Disk{{ID: "root", Path: path, Format: "raw"}},
			NICs:  []NIC{{ID: "net0", Tap: tap, MAC: mac}},
		}
		args, err := CommandLine(s, dir)
		if err != nil {
			return
		}
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-name", "-drive", "-device", "-netdev", "-chardev", "-mon", "-object", "-accel", "-msg":
			default:
				continue
			}
			for j, kv := range splitOpts(args[i+1]) {
				key, val, ok := strings.Cut(kv, "=")
				if !ok {
					if j == 0 {
						continue // the driver
					}
					t.Fatalf("%s %q: a bare %q after the first element", args[i], args[i+1], kv)
				}
				if !allowed[key] {
					t.Fatalf("%s %q: injected key %q", args[i], args[i+1], key)
				}
				if args[i] == "-drive" && key == "file" && val != path {
					t.Fatalf("-drive file=%q, want the disk path %q", val, path)
				}
			}
		}
	})
}
