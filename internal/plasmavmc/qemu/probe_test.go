package qemu

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestProbeFallsBackToTCGWithoutAKVMDevice(t *testing.T) {
	r := Probe(ProbeOptions{Device: "/nonexistent/kvm"})
	if r.Accel != AccelTCG || !strings.Contains(r.Reason, "open") {
		t.Fatalf("%+v", r)
	}
	// A device that is not KVM at all fails at the first ioctl.
	r = Probe(ProbeOptions{Device: "/dev/null"})
	if r.Accel != AccelTCG || !strings.Contains(r.Reason, "KVM_GET_API_VERSION") {
		t.Fatalf("%+v", r)
	}
}

func requireKVMDevice(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm on this machine")
	}
}

// TestProbeDecidesByWhetherKVMRunsGuestCodeAtHardwareSpeed: the answer is
// consistent with the measured loop and comes within the probe's bound,
// even on a host whose KVM only emulates (the probe is interrupted).
// UC_EXPECT_ACCEL pins the expected answer on a known machine.
func TestProbeDecidesByWhetherKVMRunsGuestCodeAtHardwareSpeed(t *testing.T) {
	requireKVMDevice(t)
	start := time.Now()
	r := Probe(ProbeOptions{})
	took := time.Since(start)
	t.Logf("probe: %+v in %s", r, took)
	if took > 3*time.Second {
		t.Fatalf("the probe took %s; it is bounded by 1s plus the interruption", took)
	}
	switch r.Accel {
	case AccelKVM:
		if r.Loop <= 0 || r.Loop > 100*time.Millisecond || !strings.HasPrefix(r.Reason, "kvm: ") {
			t.Fatalf("KVM chosen with %+v", r)
		}
	case AccelTCG:
		if !strings.HasPrefix(r.Reason, "tcg: ") {
			t.Fatalf("TCG chosen with %+v", r)
		}
	default:
		t.Fatalf("accel %q", r.Accel)
	}
	if want := os.Getenv("UC_EXPECT_ACCEL"); want != "" && string(r.Accel) != want {
		t.Fatalf("probe chose %s, UC_EXPECT_ACCEL says %s: %s", r.Accel, want, r.Reason)
	}
}

// TestTheProbeGuestRunsCorrectlyUnderKVM: given all the time it needs, the
// probe guest completes its loop and its I/O exit under KVM (so a slow
// verdict is about speed, not a broken probe guest).
func TestTheProbeGuestRunsCorrectlyUnderKVM(t *testing.T) {
	requireKVMDevice(t)
	r := Probe(ProbeOptions{MaxLoop: time.Minute, Timeout: time.Minute})
	if r.Accel != AccelKVM || r.Loop <= 0 {
		t.Fatalf("the probe guest did not complete under KVM: %+v", r)
	}
	t.Logf("the 4M-instruction loop took %s under KVM", r.Loop)
}
