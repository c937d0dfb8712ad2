// Package plasmavmcv1 holds the wire types of plasmavmc's resources
// (version 1), shared by the plasmavmc component, its worker agent and SDK
// users: virtual machines, images and workers.
//
// It holds no behaviour beyond encoding and must never import internal/.
package plasmavmcv1

import "time"

// Kinds and collections.
const (
	VMKind           = "VM"
	VMCollection     = "vms"
	ImageKind        = "Image"
	ImageCollection  = "images"
	WorkerKind       = "Worker"
	WorkerCollection = "workers"
)

// Error codes of plasmavmc's problem documents (beyond pkg/api's).
const (
	// CodeUnschedulable: no worker can take the VM; the detail says why
	// (409).
	CodeUnschedulable = "unschedulable"
	// CodeImageNotReady: the image has no data yet (409).
	CodeImageNotReady = "image_not_ready"
)

// Power states a VM is asked to be in.
const (
	PowerRunning = "running"
	PowerStopped = "stopped"
)

// VMSpec is a virtual machine.
type VMSpec struct {
	// VCPUs is the number of virtual CPUs (1 to 64).
	VCPUs int `json:"vcpus"`
	// MemoryMiB is the guest RAM in MiB (64 to 1048576).
	MemoryMiB int `json:"memoryMiB"`
	// Image names an Image of the same project (immutable).
	Image string `json:"image"`
	// DiskGiB is the size of the boot disk made from a raw or qcow2 image
	// (a copy-on-write overlay; default: the image's size). Ignored for
	// kernel images. Immutable.
	DiskGiB int `json:"diskGiB,omitempty"`
	// Volumes are extra coronafs volumes of the same project, attached in
	// order after the boot disk.
	Volumes []string `json:"volumes,omitempty"`
	// NICs attach the VM to prismnet networks of the same project, in
	// order (at most 8). Immutable.
	NICs []NIC `json:"nics,omitempty"`
	// UserData is handed to the guest as cloud-init user data (at most
	// 64 KiB).
	UserData string `json:"userData,omitempty"`
	// SSHKeys are public keys for the guest's default user (at most 16).
	SSHKeys []string `json:"sshKeys,omitempty"`
	// AntiAffinityGroup: VMs of a project with the same group run on
	// different workers (a refusal says when that cannot hold).
	AntiAffinityGroup string `json:"antiAffinityGroup,omitempty"`
	// Power is running (default) or stopped; the start and stop actions
	// set it.
	Power string `json:"power,omitempty"`
	// Reboots counts reboot requests (the reboot action increments it);
	// the worker reboots the guest when it exceeds status.reboots.
	Reboots int `json:"reboots,omitempty"`
}

// NIC is one network interface of a VM.
type NIC struct {
	// Network names a prismnet network; plasmavmc creates the port
	// (named VM-NICINDEX, owner VM/NAME) bound to the VM's host.
	Network string `json:"network,omitempty"`
	// Port names an existing prismnet port to use instead of a network.
	Port string `json:"port,omitempty"`
	// SecurityGroups of the port plasmavmc creates.
	SecurityGroups []string `json:"securityGroups,omitempty"`
}

// VM phases.
const (
	PhasePending   = "Pending"   // waiting for a worker
	PhaseScheduled = "Scheduled" // placed; the worker has not started it yet
	PhaseStarting  = "Starting"  // QEMU is starting
	PhaseRunning   = "Running"
	PhaseStopping  = "Stopping"
	PhaseStopped   = "Stopped"
	PhaseLost      = "Lost"  // its worker stopped heartbeating
	PhaseError     = "Error" // see LastError
)

// VMStatus is the observed state of a VM.
type VMStatus struct {
	// Phase is one of the phases above.
	Phase string `json:"phase,omitempty"`
	// Host is the worker the VM is placed on ("" while pending).
	Host string `json:"host,omitempty"`
	// Generation increases with every placement; a worker runs the VM
	// only at the generation it was given, so a worker that comes back
	// after the VM moved never runs it again.
	Generation int64 `json:"generation,omitempty"`
	// Message says why the VM is pending or where it stands (the
	// scheduler's explanation of a refusal).
	Message string `json:"message,omitempty"`
	// Addresses of the VM's NICs.
	Addresses []string `json:"addresses,omitempty"`
	// Accel is how the worker runs it: kvm or tcg.
	Accel string `json:"accel,omitempty"`
	// LastError is the last failure ("" if none).
	LastError string `json:"lastError,omitempty"`
	// Console is the path of the console WebSocket.
	Console string `json:"console,omitempty"`
	// BootedAt is when the guest last started.
	BootedAt *time.Time `json:"bootedAt,omitempty"`
	// Reboots is how many reboot requests the worker has carried out.
	Reboots int `json:"reboots,omitempty"`
	// Events are the latest lifecycle events, oldest first (at most 50).
	Events []Event `json:"events,omitempty"`
}

// Event is one thing that happened to a VM.
type Event struct {
	Time time.Time `json:"time"`
	// Reason is a short CamelCase word: Scheduled, Started, Stopped,
	// Crashed, Lost, Unschedulable...
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// Source is what reported it: the scheduler or a worker.
	Source string `json:"source,omitempty"`
}

// Image formats.
const (
	FormatRaw    = "raw"
	FormatQcow2  = "qcow2"
	FormatKernel = "kernel" // a kernel and an initrd, booted directly
)

// ImageSpec is a guest image.
type ImageSpec struct {
	// Format is raw, qcow2 or kernel (immutable).
	Format string `json:"format"`
	// Cmdline is the kernel command line of a kernel image.
	Cmdline string `json:"cmdline,omitempty"`
	// Description says what the image is.
	Description string `json:"description,omitempty"`
}

// ImageStatus is server-owned state of an image.
type ImageStatus struct {
	// Phase is Pending (not every part uploaded yet) or Ready.
	Phase string `json:"phase,omitempty"`
	// Size is the data's size in bytes (all parts).
	Size int64 `json:"size,omitempty"`
	// Parts are the uploaded parts: disk (raw, qcow2), or kernel and
	// initrd.
	Parts []ImagePart `json:"parts,omitempty"`
}

// Image parts.
const (
	PartDisk   = "disk"
	PartKernel = "kernel"
	PartInitrd = "initrd"
)

// ImagePart is one uploaded part of an image.
type ImagePart struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 of the part (workers cache by it).
	SHA256 string `json:"sha256"`
}

// ImageDataPath is the path of an image part's data (PUT to upload, GET
// to download), relative to the image.
const ImageDataPath = "data"

// WorkerSpec is empty: a worker registers itself.
type WorkerSpec struct{}

// WorkerStatus is what a worker's agent reports.
type WorkerStatus struct {
	// VCPUs and MemoryMiB are what the worker offers to VMs.
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memoryMiB"`
	// Accel is kvm or tcg, and AccelReason why (for tcg).
	Accel       string `json:"accel,omitempty"`
	AccelReason string `json:"accelReason,omitempty"`
	// VMs is how many VMs run on it.
	VMs int `json:"vms"`
	// ObservedAt is when the agent last reported. Liveness is not here:
	// it is the worker's heartbeat lease in chainfire (the heartbeat
	// action), which the scheduler reads.
	ObservedAt *time.Time `json:"observedAt,omitempty"`
}
