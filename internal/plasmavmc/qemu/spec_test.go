package qemu

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

var _ = testkit.RegisterUpdateFlag()

// render prints a command line one option per line, with its value.
func render(args []string) []byte {
	var b strings.Builder
	for i := 0; i < len(args); i++ {
		b.WriteString(args[i])
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			v := args[i]
			if strings.ContainsAny(v, " \"'") {
				v = strconv.Quote(v)
			}
			b.WriteString(" " + v)
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}

const testUUID = "6f1c6a52-9a7e-4c1e-8d7b-2f0c5b1d9e10"

func kernelSpec() Spec {
	return Spec{
		Name: "web-1", UUID: testUUID, VCPUs: 2, MemoryMiB: 512, Accel: AccelTCG,
		Kernel: "/var/lib/ultracloud/images/tiny/vmlinuz", Initrd: "/var/lib/ultracloud/images/tiny/initrd",
		Cmdline: "console=ttyS0 quiet panic=-1",
		Disks: []Disk{
			{ID: "root", Path: "/var/lib/ultracloud/vms/web-1/root.qcow2", Format: "qcow2", Cache: "none", AIO: "native", Serial: "root"},
			{ID: "cidata", Path: "/var/lib/ultracloud/vms/web-1/cidata.iso", Format: "raw", ReadOnly: true},
		},
		NICs: []NIC{{ID: "net0", Tap: "uct-4f2a91c0", MAC: "52:54:00:AB:cd:01"}},
		RNG:  true,
	}
}

func TestCommandLineGolden(t *testing.T) {
	diskBoot := Spec{
		Name: "db.primary", UUID: testUUID, VCPUs: 4, MemoryMiB: 8192, Accel: AccelKVM,
		Disks: []Disk{
			{ID: "root", Path: "/srv/vms/db,primary/root.qcow2", Format: "qcow2", Boot: true, Cache: "writeback", AIO: "io_uring"},
			{ID: "vol-data", Path: "nbd:unix:/run/ultracloud/coronafs/vol-data.sock:exportname=vol-data", Format: "raw", Cache: "none"},
			{ID: "vol-logs", Path: `json:{"file":{"driver":"nbd","server":{"type":"unix","path":"/run/c.sock"},"export":"logs"}}`, Format: "raw"},
		},
		NICs: []NIC{
			{ID: "net0", Tap: "uct-aaaa", MAC: "52:54:00:00:00:01", Vhost: true},
			{ID: "net1", Tap: "uct-bbbb", MAC: "52:54:00:00:00:02"},
		},
	}
	minimal := Spec{Name: "m", UUID: testUUID, VCPUs: 1, MemoryMiB: 64, Accel: AccelTCG, CPUModel: "max", Kernel: "/boot/vmlinuz", Paused: true}
	for name, c := range map[string]struct {
		spec Spec
		dir  string
	}{
		"kernel-boot-tcg": {kernelSpec(), "/var/lib/ultracloud/vms/web-1"},
		"disk-boot-kvm":   {diskBoot, "/srv/vms/db,primary"},
		"minimal":         {minimal, "/tmp/m"},
	} {
		t.Run(name, func(t *testing.T) {
			args, err := CommandLine(c.spec, c.dir)
			if err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, "cmdline-"+name, render(args))
		})
	}
}

func TestCommandLineIsAPureFunctionOfItsInput(t *testing.T) {
	a, err := CommandLine(kernelSpec(), "/v")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := CommandLine(kernelSpec(), "/v")
	if strings.Join(a, "\x00") != strings.Join(b, "\x00") {
		t.Fatal("two calls with the same spec differ")
	}
}

func TestBadSpecsAreRefusedNamingTheField(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*Spec)
		want string
	}{
		"no name":            {func(s *Spec) { s.Name = "" }, "name"},
		"name with a comma":  {func(s *Spec) { s.Name = "a,b" }, "name"},
		"bad uuid":           {func(s *Spec) { s.UUID = "nope" }, "uuid"},
		"upper-case uuid ok": {func(s *Spec) { s.UUID = strings.ToUpper(testUUID) }, ""},
		"zero vcpus":         {func(s *Spec) { s.VCPUs = 0 }, "vcpus 0"},
		"tiny memory":        {func(s *Spec) { s.MemoryMiB = 8 }, "memoryMiB 8"},
		"no accel":           {func(s *Spec) { s.Accel = "" }, "accel"},
		"cpu model option":   {func(s *Spec) { s.CPUModel = "host,pmu=off" }, "cpuModel"},
		"relative kernel":    {func(s *Spec) { s.Kernel = "vmlinuz" }, "kernel"},
		"initrd alone": {func(s *Spec) {
			s.Kernel = ""
			s.Disks[0].Boot = true
		}, "initrd and cmdline need a kernel"},
		"no boot source":       {func(s *Spec) { s.Kernel, s.Initrd, s.Cmdline = "", "", "" }, "no boot source"},
		"boot disk and kernel": {func(s *Spec) { s.Disks[0].Boot = true }, "disks[0] is marked boot"},
		"two boot disks": {func(s *Spec) {
			s.Kernel, s.Initrd, s.Cmdline = "", "", ""
			s.Disks[0].Boot, s.Disks[1].Boot = true, true
		}, "2 disks are marked boot"},
		"disk id":               {func(s *Spec) { s.Disks[1].ID = "Bad_ID" }, "disks[1].id"},
		"duplicate disk id":     {func(s *Spec) { s.Disks[1].ID = "root" }, "already used by disks[0]"},
		"nic id like a disk":    {func(s *Spec) { s.NICs[0].ID = "root" }, "nics[0].id \"root\": already used"},
		"relative disk":         {func(s *Spec) { s.Disks[0].Path = "root.qcow2" }, "disks[0].path"},
		"bad json disk":         {func(s *Spec) { s.Disks[0].Path = "json:{nope" }, "json: form"},
		"json without file":     {func(s *Spec) { s.Disks[0].Path = `json:{"driver":"nbd"}` }, `needs a "file" object`},
		"relative nbd sock":     {func(s *Spec) { s.Disks[0].Path = "nbd:unix:x.sock" }, "NBD socket path"},
		"no format":             {func(s *Spec) { s.Disks[0].Format = "" }, "disks[0].format"},
		"vmdk":                  {func(s *Spec) { s.Disks[0].Format = "vmdk" }, "disks[0].format"},
		"bad cache":             {func(s *Spec) { s.Disks[0].Cache = "fast" }, "disks[0].cache"},
		"native without direct": {func(s *Spec) { s.Disks[0].Cache = "writeback" }, "aio native needs cache none"},
		"bad aio":               {func(s *Spec) { s.Disks[0].AIO = "posix" }, "disks[0].aio"},
		"bad serial":            {func(s *Spec) { s.Disks[0].Serial = "a,b" }, "disks[0].serial"},
		"long tap":              {func(s *Spec) { s.NICs[0].Tap = "uct-0123456789abc" }, "nics[0].tap"},
		"tap with a comma":      {func(s *Spec) { s.NICs[0].Tap = "uct-a,b" }, "nics[0].tap"},
		"duplicate tap": {func(s *Spec) {
			s.NICs = append(s.NICs, NIC{ID: "net1", Tap: s.NICs[0].Tap, MAC: "52:54:00:00:00:09"})
		}, "nics[1].tap"},
		"bad mac":       {func(s *Spec) { s.NICs[0].MAC = "52:54:00:00:00" }, "nics[0].mac"},
		"multicast mac": {func(s *Spec) { s.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
	} {
		t.Run(name, func(t *testing.T) {
			s := kernelSpec()
			c.edit(&s)
			_, err := CommandLine(s, "/v")
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err = %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %q does not say %q", err, c.want)
			}
		})
	}
}

func TestASocketPathTooLongForUnixSocketsIsRefused(t *testing.T) {
	dir := "/" + strings.Repeat("d", 100)
	_, err := CommandLine(kernelSpec(), dir)
	if err == nil || !strings.Contains(err.Error(), "a Unix socket allows 107") {
		t.Fatalf("err = %v", err)
	}
	if _, err := CommandLine(kernelSpec(), "relative/dir"); err == nil {
		t.Fatal("a relative VM directory was accepted")
	}
}
