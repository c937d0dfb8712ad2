package plasmavmc

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// TestParseMemoryTakesTheUnitsPeopleType: binary suffixes with or without
// "i" and "B", fractions that come out whole, a bare number as MiB; decimal
// "GB" and fractions of a MiB are refused.
func TestParseMemoryTakesTheUnitsPeopleType(t *testing.T) {
	for in, want := range map[string]int{
		"512": 512, "512Mi": 512, "512M": 512, "512MiB": 512, "2Gi": 2048, "2G": 2048, "2gib": 2048,
		"1.5Gi": 1536, "0.25Gi": 256, "1Ti": 1 << 20, " 64Mi ": 64,
	} {
		got, err := parseMemory("--memory", in)
		if err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Gi", "2GB", "2 gigs", "1.1Mi", "0", "-1Gi", "1e3", "NaN", "99999999Ti"} {
		if got, err := parseMemory("--memory", in); err == nil || !strings.HasPrefix(err.Error(), "--memory: ") {
			t.Errorf("parseMemory(%q) = %d, %v; want an error naming --memory", in, got, err)
		}
	}
}

// TestNICFlagsKeepTheirOrder: --sg belongs to the --network before it,
// and the NICs come out in command-line order.
func TestNICFlagsKeepTheirOrder(t *testing.T) {
	var n nicFlags
	for _, a := range [][2]string{{"network", "web"}, {"sg", "ssh"}, {"sg", "http"}, {"port", "p1"}, {"network", "db"}} {
		if err := (nicValue{&n, a[0]}).Set(a[1]); err != nil {
			t.Fatal(err)
		}
	}
	want := []plasmavmcv1.NIC{{Network: "web", SecurityGroups: []string{"ssh", "http"}}, {Port: "p1"}, {Network: "db"}}
	if n.err != nil || len(n.nics) != 3 || n.nics[0].Network != "web" || strings.Join(n.nics[0].SecurityGroups, ",") != "ssh,http" ||
		n.nics[1].Port != "p1" || n.nics[2].Network != "db" || len(n.nics[2].SecurityGroups) != 0 {
		t.Fatalf("nics %+v (err %v), want %+v", n.nics, n.err, want)
	}
}

// TestUploadProgressLiveRedrawsOneLine: on a terminal the display redraws
// one line in place, no more often than redrawEvery, and ends with the
// summary on a line of its own.
func TestUploadProgressLiveRedrawsOneLine(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	p := newUploadProgress(nil, &out, true, "kernel", 4<<20)
	p.now = func() time.Time { return now }
	p.reset(bytes.NewReader(make([]byte, 4<<20)))
	buf := make([]byte, 1<<20)
	for i := 0; i < 4; i++ {
		if _, err := p.Read(buf); err != nil {
			t.Fatal(err)
		}
		now = now.Add(60 * time.Millisecond) // every other read redraws
	}
	p.done("abc")
	got := out.String()
	if n := strings.Count(got, clearLine); n != 3 { // two redraws and the summary's clear
		t.Fatalf("%d redraws in %q, want 2 and the final clear", n, got)
	}
	if !strings.HasSuffix(got, clearLine+"kernel: 4.0 MiB sent in 0.2s (16.7 MiB/s), sha256 abc\n") || strings.Count(got, "\n") != 1 {
		t.Fatalf("live output %q", got)
	}
}

// TestPhaseDisplayPrintsChangesOnly: each new phase or message is one
// line with the time since the start; a repeat prints nothing.
func TestPhaseDisplayPrintsChangesOnly(t *testing.T) {
	var out bytes.Buffer
	start := time.Unix(1000, 0)
	now := start
	d := newPhaseDisplay(&out, false, "vm/web", start)
	d.now = func() time.Time { return now }
	d.show("Pending", "waiting for the scheduler")
	now = now.Add(1500 * time.Millisecond)
	d.show("Pending", "waiting for the scheduler")
	d.show("Scheduled", "placed on w1")
	d.tick() // not a terminal: nothing
	now = now.Add(2 * time.Second)
	d.show("Running", "")
	want := "vm/web: Pending after 0.0s: waiting for the scheduler\nvm/web: Scheduled after 1.5s: placed on w1\nvm/web: Running after 3.5s\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
