package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProbeOptions tune Probe. The zero value probes /dev/kvm with the
// defaults below.
type ProbeOptions struct {
	// Device is the KVM device; "" means /dev/kvm.
	Device string
	// MaxLoop is how long the probe's guest loop may take under KVM
	// before KVM is judged unusable; 0 means 100ms. On hardware
	// virtualization it takes about a millisecond.
	MaxLoop time.Duration
	// Timeout bounds the whole guest run; 0 means 1s. A run still going
	// then is interrupted.
	Timeout time.Duration
}

// ProbeResult is the accelerator to use and why, for the worker's and the
// VM's status.
type ProbeResult struct {
	// Accel is AccelKVM when /dev/kvm ran the probe guest at hardware
	// speed, AccelTCG otherwise.
	Accel Accel
	// Reason is one line saying what was found, e.g. "kvm: a 4M-instruction
	// guest loop ran in 1.2ms" or "tcg: /dev/kvm: open: no such file or
	// directory".
	Reason string
	// Loop is how long the probe guest's loop took, when it ran.
	Loop time.Duration
}

// probeLoops is the probe guest's loop count: 2M iterations of dec+jnz,
// 4M instructions.
const probeLoops = 2_000_000

// Probe decides between KVM and TCG by running a tiny guest on /dev/kvm.
//
// The usual check (open /dev/kvm, KVM_GET_API_VERSION, KVM_CREATE_VM) is
// not enough: on some hosts (measured on this project's development
// machine) all of that succeeds, a vCPU runs and exits on I/O, but guest
// code runs about a thousand times slower than native (each instruction
// emulated or single-stepped; a Linux kernel never gets past its
// decompressor), and `-cpu host` makes QEMU abort on an MSR. So Probe also
// runs a 32-bit protected-mode loop of 4M instructions in a VM of its own
// and times it: under working KVM that takes about a millisecond, under
// the emulated one 3-5 seconds. KVM is chosen only when the loop finishes within
// MaxLoop; otherwise TCG, which runs the same loop in milliseconds.
func Probe(opts ProbeOptions) ProbeResult {
	dev := opts.Device
	if dev == "" {
		dev = "/dev/kvm"
	}
	maxLoop := opts.MaxLoop
	if maxLoop <= 0 {
		maxLoop = 100 * time.Millisecond
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	loop, err := probeKVM(dev, timeout)
	switch {
	case err != nil:
		return ProbeResult{Accel: AccelTCG, Reason: "tcg: " + err.Error()}
	case loop > maxLoop:
		return ProbeResult{Accel: AccelTCG, Loop: loop, Reason: fmt.Sprintf(
			"tcg: %s works, but a 4M-instruction guest loop took %s under KVM (limit %s): guest code is emulated, not run by hardware virtualization",
			dev, loop.Round(time.Millisecond), maxLoop)}
	default:
		return ProbeResult{Accel: AccelKVM, Loop: loop, Reason: fmt.Sprintf(
			"kvm: a 4M-instruction guest loop ran in %s", loop.Round(10*time.Microsecond))}
	}
}

// KVM ioctls (linux/kvm.h); the encoding is _IO/_IOR/_IOW of type 0xAE.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmRun                 = 0xAE80
	kvmAPIVersion          = 12
	kvmExitIO              = 2
	kvmExitHLT             = 5
	kvmExitIntr            = 10
	probePort              = 0x10
	probeValue             = 0x2a
	probeCodeAddr          = 0x1000
	probeMemSize           = 0x10000
	kvmSetUserMemoryRegion = 1<<30 | uint32(unsafe.Sizeof(kvmUserspaceMemoryRegion{}))<<16 | 0xAE<<8 | 0x46
	kvmGetSregs            = 2<<30 | uint32(unsafe.Sizeof(kvmSregs{}))<<16 | 0xAE<<8 | 0x83
	kvmSetSregs            = 1<<30 | uint32(unsafe.Sizeof(kvmSregs{}))<<16 | 0xAE<<8 | 0x84
	kvmSetRegs             = 1<<30 | uint32(unsafe.Sizeof(kvmRegs{}))<<16 | 0xAE<<8 | 0x82
)

type kvmUserspaceMemoryRegion struct {
	Slot, Flags                        uint32
	GuestPhysAddr, MemorySize, UserMem uint64
}

type kvmSegment struct {
	Base                                 uint64
	Limit                                uint32
	Selector                             uint16
	Type, Present, DPL, DB, S, L, G, AVL uint8
	Unusable, _                          uint8
}

type kvmDtable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

type kvmSregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT         kvmSegment
	GDT, IDT                                kvmDtable
	CR0, CR2, CR3, CR4, CR8, EFER, APICBase uint64
	InterruptBitmap                         [4]uint64
}

type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

func ioctl(fd int, req uint32, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

// probeCode is the guest: mov ecx, probeLoops; 1: dec ecx; jnz 1b;
// mov al, probeValue; out probePort, al; hlt.
func probeCode() []byte {
	code := []byte{0xB9, 0, 0, 0, 0, 0x49, 0x75, 0xFD, 0xB0, probeValue, 0xE6, probePort, 0xF4}
	binary.LittleEndian.PutUint32(code[1:], probeLoops)
	return code
}

// probeKVM runs the probe guest and returns how long its loop took.
func probeKVM(dev string, timeout time.Duration) (time.Duration, error) {
	kvm, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: open: %w", dev, err)
	}
	defer unix.Close(kvm)
	v, err := ioctl(kvm, kvmGetAPIVersion, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: KVM_GET_API_VERSION: %w", dev, err)
	}
	if v != kvmAPIVersion {
		return 0, fmt.Errorf("%s: KVM API version %d, want %d", dev, v, kvmAPIVersion)
	}
	vmfd, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: KVM_CREATE_VM: %w", dev, err)
	}
	vm := int(vmfd)
	defer unix.Close(vm)

	mem, err := unix.Mmap(-1, 0, probeMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("probe guest memory: %w", err)
	}
	copy(mem[probeCodeAddr:], probeCode())
	region := kvmUserspaceMemoryRegion{MemorySize: probeMemSize, UserMem: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		_ = unix.Munmap(mem)
		return 0, fmt.Errorf("%s: KVM_SET_USER_MEMORY_REGION: %w", dev, err)
	}
	vcpufd, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		_ = unix.Munmap(mem)
		return 0, fmt.Errorf("%s: KVM_CREATE_VCPU: %w", dev, err)
	}
	vcpu := int(vcpufd)
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil || size < 64 {
		unix.Close(vcpu)
		_ = unix.Munmap(mem)
		return 0, fmt.Errorf("%s: KVM_GET_VCPU_MMAP_SIZE: %d, %v", dev, size, err)
	}
	run, err := unix.Mmap(vcpu, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(vcpu)
		_ = unix.Munmap(mem)
		return 0, fmt.Errorf("%s: mmap kvm_run: %w", dev, err)
	}
	if err := setupProbeVCPU(vcpu); err != nil {
		_ = unix.Munmap(run)
		unix.Close(vcpu)
		_ = unix.Munmap(mem)
		return 0, fmt.Errorf("%s: %w", dev, err)
	}

	res := make(chan probeRun, 1)
	var stop atomic.Bool
	tidc := make(chan int, 1)
	// The vCPU runs on a locked OS thread so that thread can be signalled:
	// a signal makes KVM_RUN return EINTR. The goroutine owns the vCPU's
	// resources and frees them when it is done, which is after the
	// interruption below at the latest.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer func() { _ = unix.Munmap(run); unix.Close(vcpu); _ = unix.Munmap(mem) }()
		tidc <- unix.Gettid()
		res <- runProbe(vcpu, run, &stop)
	}()
	tid := <-tidc
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case r := <-res:
		return r.loop, r.err
	case <-deadline.C:
	}
	stop.Store(true)
	// SIGURG is the Go runtime's own preemption signal: harmless to the
	// process, and it interrupts KVM_RUN on that thread.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(5 * time.Second)
	for {
		_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		select {
		case <-res:
			return 0, fmt.Errorf("%s: the 4M-instruction probe guest did not finish within %s: guest code is not run by hardware virtualization", dev, timeout)
		case <-tick.C:
		case <-giveUp:
			return 0, fmt.Errorf("%s: KVM_RUN did not return within %s even when interrupted", dev, timeout+5*time.Second)
		}
	}
}

// setupProbeVCPU puts the vCPU in flat 32-bit protected mode (no paging)
// at the probe code.
func setupProbeVCPU(vcpu int) error {
	var s kvmSregs
	if _, err := ioctl(vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	flat := func(selector uint16, typ uint8) kvmSegment {
		return kvmSegment{Limit: 0xffffffff, Selector: selector, Type: typ, Present: 1, DB: 1, S: 1, G: 1}
	}
	s.CS = flat(8, 11) // code: execute/read, accessed
	s.DS, s.ES, s.FS, s.GS, s.SS = flat(16, 3), flat(16, 3), flat(16, 3), flat(16, 3), flat(16, 3)
	s.CR0 |= 1 // PE
	if _, err := ioctl(vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	r := kvmRegs{RIP: probeCodeAddr, RFLAGS: 2}
	if _, err := ioctl(vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&r))); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

type probeRun struct {
	loop time.Duration
	err  error
}

var errProbeStopped = errors.New("probe stopped")

// runProbe runs the vCPU until the probe guest's I/O exit, re-entering on
// EINTR (the runtime's own signals) until stop is set.
func runProbe(vcpu int, run []byte, stop *atomic.Bool) probeRun {
	start := time.Now()
	for {
		_, err := ioctl(vcpu, kvmRun, 0)
		reason := binary.NativeEndian.Uint32(run[8:])
		if errors.Is(err, unix.EINTR) || (err == nil && reason == kvmExitIntr) {
			if stop.Load() {
				return probeRun{err: errProbeStopped}
			}
			continue
		}
		if err != nil {
			return probeRun{err: fmt.Errorf("KVM_RUN: %w", err)}
		}
		switch reason {
		case kvmExitIO:
			// struct kvm_run: the io exit is at offset 32: direction u8,
			// size u8, port u16, count u32, data_offset u64.
			port := binary.NativeEndian.Uint16(run[34:])
			off := binary.NativeEndian.Uint64(run[40:])
			if port != probePort || off >= uint64(len(run)) || run[off] != probeValue {
				return probeRun{err: fmt.Errorf("the probe guest wrote to port %#x, not %#x with %#x: KVM ran it wrongly", port, probePort, probeValue)}
			}
			return probeRun{loop: time.Since(start)}
		case kvmExitHLT:
			return probeRun{err: errors.New("the probe guest halted before its loop finished: KVM ran it wrongly")}
		default:
			return probeRun{err: fmt.Errorf("the probe guest exited with KVM exit reason %d", reason)}
		}
	}
}
