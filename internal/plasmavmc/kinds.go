package plasmavmc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// Limits of a VM spec.
const (
	maxVCPUs      = 64
	minMemoryMiB  = 64
	maxMemoryMiB  = 1 << 20
	maxDiskGiB    = 16384
	maxVolumes    = 16
	maxNICs       = 8
	maxUserData   = 64 << 10
	maxSSHKeys    = 16
	maxSSHKeySize = 8 << 10
	maxEvents     = 50
)

// kinds registers plasmavmc's kinds.
type kinds struct {
	store storage.Store
	now   func() time.Time
	beats heartbeats
}

func (k *kinds) register(a *apiserver.API) error {
	for _, reg := range []func(*apiserver.API) error{k.vms, k.images, k.workers} {
		if err := reg(a); err != nil {
			return err
		}
	}
	return nil
}

func fieldErr(field, format string, args ...any) error {
	return apiserver.FieldError(field, format, args...)
}

func validateVM(s *plasmavmcv1.VMSpec) error {
	switch {
	case s.VCPUs < 1 || s.VCPUs > maxVCPUs:
		return fieldErr("vcpus", "%d: a VM has 1 to %d vCPUs", s.VCPUs, maxVCPUs)
	case s.MemoryMiB < minMemoryMiB || s.MemoryMiB > maxMemoryMiB:
		return fieldErr("memoryMiB", "%d: a VM has %d MiB to %d MiB of memory", s.MemoryMiB, minMemoryMiB, maxMemoryMiB)
	case s.DiskGiB < 0 || s.DiskGiB > maxDiskGiB:
		return fieldErr("diskGiB", "%d is outside 0 to %d", s.DiskGiB, maxDiskGiB)
	case len(s.Volumes) > maxVolumes:
		return fieldErr("volumes", "at most %d volumes, got %d", maxVolumes, len(s.Volumes))
	case len(s.NICs) > maxNICs:
		return fieldErr("nics", "at most %d NICs, got %d", maxNICs, len(s.NICs))
	case len(s.UserData) > maxUserData:
		return fieldErr("userData", "is %d bytes; at most %d (64 KiB)", len(s.UserData), maxUserData)
	case len(s.SSHKeys) > maxSSHKeys:
		return fieldErr("sshKeys", "at most %d keys, got %d", maxSSHKeys, len(s.SSHKeys))
	}
	if err := apiserver.ValidateName("image", s.Image); err != nil {
		return err
	}
	for i, v := range s.Volumes {
		if err := apiserver.ValidateName(fmt.Sprintf("volumes[%d]", i), v); err != nil {
			return err
		}
	}
	for i, n := range s.NICs {
		f := fmt.Sprintf("nics[%d]", i)
		if (n.Network == "") == (n.Port == "") {
			return fieldErr(f, "give a network or a port, not both or neither")
		}
		for _, name := range []string{n.Network, n.Port} {
			if name != "" {
				if err := apiserver.ValidateName(f, name); err != nil {
					return err
				}
			}
		}
		if n.Port != "" && len(n.SecurityGroups) > 0 {
			return fieldErr(f+".securityGroups", "apply to the port plasmavmc creates; an existing port keeps its own")
		}
		for j, g := range n.SecurityGroups {
			if err := apiserver.ValidateName(fmt.Sprintf("%s.securityGroups[%d]", f, j), g); err != nil {
				return err
			}
		}
	}
	for i, key := range s.SSHKeys {
		f := fmt.Sprintf("sshKeys[%d]", i)
		fields := strings.Fields(key)
		if len(key) > maxSSHKeySize || len(fields) < 2 || strings.ContainsAny(key, "\r\n") ||
			!(strings.HasPrefix(fields[0], "ssh-") || strings.HasPrefix(fields[0], "ecdsa-") || strings.HasPrefix(fields[0], "sk-")) {
			return fieldErr(f, "is not an OpenSSH public key (\"ssh-ed25519 AAAA... comment\", one line)")
		}
	}
	if s.AntiAffinityGroup != "" {
		if err := apiserver.ValidateName("antiAffinityGroup", s.AntiAffinityGroup); err != nil {
			return err
		}
	}
	switch s.Power {
	case "":
		s.Power = plasmavmcv1.PowerRunning
	case plasmavmcv1.PowerRunning, plasmavmcv1.PowerStopped:
	default:
		return fieldErr("power", "%q: use running or stopped", s.Power)
	}
	return nil
}

func validateVMUpdate(old, new *plasmavmcv1.VMSpec) error {
	switch {
	case old.Image != new.Image || old.DiskGiB != new.DiskGiB:
		return fieldErr("image", "image and diskGiB are immutable")
	case fmt.Sprint(old.NICs) != fmt.Sprint(new.NICs):
		return fieldErr("nics", "are immutable")
	case old.VCPUs != new.VCPUs || old.MemoryMiB != new.MemoryMiB:
		return fieldErr("vcpus", "vcpus and memoryMiB are immutable (resizing is not supported yet)")
	case old.AntiAffinityGroup != new.AntiAffinityGroup:
		return fieldErr("antiAffinityGroup", "is immutable")
	}
	return nil
}

func exists(coll, project, name, what string) apiserver.Precondition {
	return apiserver.Precondition{
		Compare: storage.Compare{Key: apiserver.ObjectKey(coll, project, name), Target: storage.CompareExists},
		Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "%s %q not found in project %q", what, name, project),
	}
}

// addEvent appends an event, keeping the newest maxEvents.
func addEvent(st *plasmavmcv1.VMStatus, at time.Time, source, reason, format string, args ...any) {
	st.Events = append(st.Events, plasmavmcv1.Event{Time: at.UTC().Truncate(time.Millisecond), Source: source, Reason: reason,
		Message: fmt.Sprintf(format, args...)})
	if len(st.Events) > maxEvents {
		st.Events = st.Events[len(st.Events)-maxEvents:]
	}
}

func (k *kinds) vms(a *apiserver.API) error {
	powerAction := func(name, power, summary string) apiserver.Action {
		return apiserver.Action{Name: name, Verb: name, Summary: summary,
			Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*api.Object, error) {
				return c.Update(func(o *api.Object) error {
					return patchSpec(o, func(s *plasmavmcv1.VMSpec) { s.Power = power })
				})
			})}
	}
	return apiserver.Register(a, "plasmavmc", apiserver.KindDef[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus]{
		Kind: plasmavmcv1.VMKind, Collection: plasmavmcv1.VMCollection, Singular: "vm",
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "VCPUS", Path: "spec.vcpus"}, {Name: "MEMORY MIB", Path: "spec.memoryMiB"},
			{Name: "IMAGE", Path: "spec.image"}, {Name: "PHASE", Path: "status.phase"}, {Name: "HOST", Path: "status.host"},
			{Name: "ADDRESSES", Path: "status.addresses"}},
		ValidateSpec:   validateVM,
		ValidateUpdate: validateVMUpdate,
		// A VM is its worker's desired state once placed.
		NodeBinding: func(_ *api.ObjectMeta, _ *plasmavmcv1.VMSpec, st *plasmavmcv1.VMStatus) string { return st.Host },
		OnCreate: func(ctx context.Context, c *apiserver.Creation[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus]) error {
			p := c.Project
			if err := k.fitsSomeWorker(ctx, c.Spec); err != nil {
				return err
			}
			c.Require = append(c.Require, apiserver.Precondition{
				Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.ProjectCollection, "", p), Target: storage.CompareExists},
				Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", p)},
				exists(plasmavmcv1.ImageCollection, p, c.Spec.Image, "image"))
			for _, v := range c.Spec.Volumes {
				c.Require = append(c.Require, exists("volumes", p, v, "volume"))
			}
			for _, n := range c.Spec.NICs {
				if n.Network != "" {
					c.Require = append(c.Require, exists("networks", p, n.Network, "network"))
				} else {
					c.Require = append(c.Require, exists("ports", p, n.Port, "port"))
				}
				for _, g := range n.SecurityGroups {
					c.Require = append(c.Require, exists("securitygroups", p, g, "security group"))
				}
			}
			c.Status.Phase = plasmavmcv1.PhasePending
			c.Status.Message = "waiting for the scheduler"
			addEvent(c.Status, k.now(), "api", "Created", "VM created")
			return nil
		},
		// Placement (host and generation) changes only with a new host:
		// a worker (which cannot move a VM) never changes the generation.
		OnStatusUpdate: func(old, new *plasmavmcv1.VMStatus) error {
			if new.Host == old.Host {
				new.Generation = old.Generation
			}
			return nil
		},
		Actions: []apiserver.Action{
			powerAction("start", plasmavmcv1.PowerRunning, "start the VM (desired power: running)"),
			powerAction("stop", plasmavmcv1.PowerStopped, "stop the VM: ACPI power-off, then forced after the worker's timeout"),
			{Name: "reboot", Summary: "reboot the VM (ACPI reset request, then forced)",
				Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*api.Object, error) {
					return c.Update(func(o *api.Object) error {
						return patchSpec(o, func(s *plasmavmcv1.VMSpec) { s.Reboots++ })
					})
				})},
		},
	})
}

func (k *kinds) images(a *apiserver.API) error {
	return apiserver.Register(a, "plasmavmc", apiserver.KindDef[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]{
		Kind: plasmavmcv1.ImageKind, Collection: plasmavmcv1.ImageCollection, Singular: "image",
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "FORMAT", Path: "spec.format"}, {Name: "PHASE", Path: "status.phase"},
			{Name: "SIZE", Path: "status.size"}},
		ValidateSpec: func(s *plasmavmcv1.ImageSpec) error {
			switch s.Format {
			case plasmavmcv1.FormatRaw, plasmavmcv1.FormatQcow2, plasmavmcv1.FormatKernel:
			default:
				return fieldErr("format", "%q: use raw, qcow2 or kernel", s.Format)
			}
			if s.Cmdline != "" && s.Format != plasmavmcv1.FormatKernel {
				return fieldErr("cmdline", "only kernel images have a command line")
			}
			if len(s.Cmdline) > 4096 || strings.ContainsAny(s.Cmdline, "\x00\n") {
				return fieldErr("cmdline", "at most 4096 characters on one line")
			}
			if len(s.Description) > 1024 {
				return fieldErr("description", "at most 1024 characters")
			}
			return nil
		},
		ValidateUpdate: func(old, new *plasmavmcv1.ImageSpec) error {
			if old.Format != new.Format {
				return fieldErr("format", "is immutable")
			}
			return nil
		},
		InitialStatus: func(*plasmavmcv1.ImageSpec) *plasmavmcv1.ImageStatus {
			return &plasmavmcv1.ImageStatus{Phase: "Pending"}
		},
		OnCreate: func(_ context.Context, c *apiserver.Creation[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]) error {
			c.Require = append(c.Require, apiserver.Precondition{
				Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.ProjectCollection, "", c.Project), Target: storage.CompareExists},
				Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", c.Project)})
			return nil
		},
		OnStatusUpdate: func(old, new *plasmavmcv1.ImageStatus) error {
			*new = *old // the upload sets it
			return nil
		},
		OnDelete: func(_ context.Context, d *apiserver.Deletion[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus]) error {
			d.Ops = append(d.Ops, deleteImageData(d.Object)...)
			return nil
		},
		Actions: k.imageActions(),
	})
}

func (k *kinds) workers(a *apiserver.API) error {
	return apiserver.Register(a, "plasmavmc", apiserver.KindDef[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus]{
		Kind: plasmavmcv1.WorkerKind, Collection: plasmavmcv1.WorkerCollection, Singular: "worker",
		Scope: api.ScopeCluster,
		Columns: []api.Column{{Name: "VCPUS", Path: "status.vcpus"}, {Name: "MEMORY MIB", Path: "status.memoryMiB"},
			{Name: "ACCEL", Path: "status.accel"}, {Name: "VMS", Path: "status.vms"}, {Name: "OBSERVED", Path: "status.observedAt"}},
		// A worker registers itself and reports its capacity.
		NodeBinding:    func(m *api.ObjectMeta, _ *plasmavmcv1.WorkerSpec, _ *plasmavmcv1.WorkerStatus) string { return m.Name },
		SelfRegistered: true,
		ValidateStatus: func(s *plasmavmcv1.WorkerStatus) error {
			if s.VCPUs < 0 || s.MemoryMiB < 0 || s.VMs < 0 {
				return fieldErr("status", "capacity cannot be negative")
			}
			return nil
		},
		Actions: []apiserver.Action{{Name: "heartbeat", Verb: "updatestatus", AuditVerb: "heartbeat",
			Summary: "the worker is alive (renews its heartbeat lease)",
			Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*apiserver.NoBody, error) {
				return nil, k.beats.beat(c.Context(), c.Name)
			})}},
	})
}

// fitsSomeWorker refuses a VM larger than every registered worker (it
// could never run); with no worker registered yet it waits as Pending.
func (k *kinds) fitsSomeWorker(ctx context.Context, s *plasmavmcv1.VMSpec) error {
	prefix := []byte(apiserver.CollectionPrefix(plasmavmcv1.WorkerCollection))
	kvs, _, err := k.store.Range(ctx, prefix, storage.PrefixEnd(prefix), 0)
	if err != nil {
		return fmt.Errorf("plasmavmc: reading workers: %w", err)
	}
	var bigMem, bigCPU string
	maxMem, maxCPU, reported := 0, 0, 0
	for _, kv := range kvs {
		var o struct {
			Metadata api.ObjectMeta           `json:"metadata"`
			Status   plasmavmcv1.WorkerStatus `json:"status"`
		}
		if json.Unmarshal(kv.Value, &o) != nil || o.Status.ObservedAt == nil {
			continue
		}
		reported++
		if o.Status.MemoryMiB > maxMem {
			maxMem, bigMem = o.Status.MemoryMiB, o.Metadata.Name
		}
		if o.Status.VCPUs > maxCPU {
			maxCPU, bigCPU = o.Status.VCPUs, o.Metadata.Name
		}
	}
	switch {
	case reported == 0:
		return nil
	case s.MemoryMiB > maxMem:
		return apiserver.Errorf(http.StatusConflict, plasmavmcv1.CodeUnschedulable,
			"no worker has %s of memory: the largest, %s, has %s", mib(s.MemoryMiB), bigMem, mib(maxMem))
	case s.VCPUs > maxCPU:
		return apiserver.Errorf(http.StatusConflict, plasmavmcv1.CodeUnschedulable,
			"no worker has %d vCPUs: the largest, %s, has %d", s.VCPUs, bigCPU, maxCPU)
	}
	return nil
}
