package plasmavmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apicache"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// scheduler places VMs and follows workers' liveness. Every pass starts
// from the whole cached state (level-based), so a restart or a new leader
// simply continues. Placement: among the live workers with room for the
// VM's vCPUs and memory (every VM placed on a worker counts, stopped ones
// too: they keep their disk there) and without a VM of the same project
// and anti-affinity group, the one with the most free memory. Failover:
// when a worker's heartbeat lease expires its VMs are Lost; those whose
// disks are not on that worker (kernel images, with volumes only on
// coronafs) are placed again at a new generation, the others stay Lost
// until the worker returns.
type scheduler struct {
	component.Readiness
	log      *slog.Logger
	endpoint func(context.Context) (string, error)
	tokens   client.TokenSource
	elector  coord.Elector
	identity string
	beats    heartbeats
	store    storage.Store
	now      func() time.Time
	leading  atomic.Bool
	placed   atomic.Int64
}

func (s *scheduler) Name() string { return SchedulerName }

// Report says whether this instance leads and how many VMs it placed.
func (s *scheduler) Report(context.Context) component.Report {
	return component.Report{Details: map[string]string{"leader": fmt.Sprint(s.leading.Load()), "placed": fmt.Sprint(s.placed.Load())}}
}

func (s *scheduler) Run(ctx context.Context) error {
	s.MarkReady()
	if s.elector == nil {
		s.leading.Store(true)
		s.term(ctx)
		return nil
	}
	for ctx.Err() == nil {
		lead, err := s.elector.Campaign(ctx, s.identity)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("plasmavmc-scheduler: campaign failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		s.leading.Store(true)
		s.term(lead.Context())
		s.leading.Store(false)
		_ = lead.Resign(context.WithoutCancel(ctx))
	}
	return nil
}

// passInterval bounds how long a lease expiry goes unnoticed.
const passInterval = time.Second

func (s *scheduler) term(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base, err := s.endpoint(ctx)
	if err != nil {
		return
	}
	cl, err := client.New(client.Config{Endpoint: base, TokenSource: s.tokens})
	if err != nil {
		s.log.Error("plasmavmc-scheduler: API client", "err", err)
		return
	}
	c := apicache.New(s.log, plasmavmcv1.VMCollection, plasmavmcv1.WorkerCollection, plasmavmcv1.ImageCollection,
		prismnetv1.PortCollection)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, cl) }()
	defer func() { cancel(); <-done }()
	tick := time.NewTicker(passInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Changed():
		case <-tick.C:
			if err := collectImages(ctx, s.store); err != nil && ctx.Err() == nil {
				s.log.Warn("plasmavmc-scheduler: collecting deleted images' data", "err", err)
			}
		}
		if !c.Synced() {
			continue
		}
		if err := s.pass(ctx, cl, c); err != nil && ctx.Err() == nil {
			s.log.Warn("plasmavmc-scheduler: pass failed; the next one retries", "err", err)
		}
	}
}

// workerView is a worker's capacity and what is placed on it.
type workerView struct {
	name             string
	vcpus, mem       int
	usedCPU, usedMem int
	groups           map[string]bool // "project/group" of its VMs
	alive            bool
}

func (w *workerView) freeMem() int { return w.mem - w.usedMem }
func (w *workerView) freeCPU() int { return w.vcpus - w.usedCPU }

type vmView struct {
	o    *api.Object
	spec *plasmavmcv1.VMSpec
	st   *plasmavmcv1.VMStatus
}

// pass places pending VMs and handles lost workers once.
func (s *scheduler) pass(ctx context.Context, cl *client.Client, c *apicache.Cache) error {
	alive, known, err := s.beats.alive(ctx)
	if err != nil {
		return err
	}
	workers := map[string]*workerView{}
	for _, o := range c.List(plasmavmcv1.WorkerCollection) {
		_, st, err := decodeObj[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus](o)
		if err != nil || st.ObservedAt == nil {
			continue // never reported its capacity
		}
		workers[o.Metadata.Name] = &workerView{name: o.Metadata.Name, vcpus: st.VCPUs, mem: st.MemoryMiB,
			groups: map[string]bool{}, alive: !known || alive[o.Metadata.Name]}
	}
	formats := map[string]string{}
	for _, o := range c.List(plasmavmcv1.ImageCollection) {
		if spec, _, err := decodeObj[plasmavmcv1.ImageSpec, plasmavmcv1.ImageStatus](o); err == nil {
			formats[apicache.Key(o)] = spec.Format
		}
	}
	var vms []vmView
	for _, o := range c.List(plasmavmcv1.VMCollection) {
		spec, st, err := decodeObj[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](o)
		if err != nil {
			continue
		}
		vms = append(vms, vmView{o: o, spec: spec, st: st})
		if w := workers[st.Host]; w != nil && st.Phase != plasmavmcv1.PhaseLost {
			w.usedCPU += spec.VCPUs
			w.usedMem += spec.MemoryMiB
			if spec.AntiAffinityGroup != "" {
				w.groups[o.Metadata.Project+"/"+spec.AntiAffinityGroup] = true
			}
		}
	}
	// Oldest first, so a stream of new VMs cannot starve an older one.
	sort.SliceStable(vms, func(i, j int) bool {
		return vms[i].o.Metadata.CreatedAt.Before(*vms[j].o.Metadata.CreatedAt)
	})
	addrs, nicErr := s.syncNICs(ctx, cl, c, vms)
	errs := []error{nicErr}
	newAddrs := map[string][]string{}
	for _, a := range addrs {
		newAddrs[apicache.Key(a.v.o)] = a.addrs
	}
	now := s.now()
	for _, v := range vms {
		st := *v.st
		switch {
		case st.Host != "" && st.Phase != plasmavmcv1.PhaseLost && workers[st.Host] != nil && !workers[st.Host].alive,
			st.Host != "" && st.Phase != plasmavmcv1.PhaseLost && workers[st.Host] == nil:
			// Its worker is gone.
			w := st.Host
			if movable(v, formats) {
				addEvent(&st, now, "scheduler", "Lost", "worker %s stopped heartbeating; the VM has no disk there and is placed again", w)
				st.Host, st.Phase, st.Generation = "", plasmavmcv1.PhasePending, st.Generation+1
				st.Message = "placing again: worker " + w + " was lost"
			} else {
				addEvent(&st, now, "scheduler", "Lost", "worker %s stopped heartbeating; its local disk keeps the VM there until it returns", w)
				st.Phase = plasmavmcv1.PhaseLost
				st.Message = "worker " + w + " is lost; the VM's boot disk is on it"
			}
		case st.Host == "" && v.spec.Power != plasmavmcv1.PowerStopped:
			w, why := choose(v, workers)
			if w == nil {
				if st.Message == why {
					continue
				}
				st.Phase, st.Message = plasmavmcv1.PhasePending, why
				addEvent(&st, now, "scheduler", "Unschedulable", "%s", why)
				break
			}
			w.usedCPU += v.spec.VCPUs
			w.usedMem += v.spec.MemoryMiB
			if v.spec.AntiAffinityGroup != "" {
				w.groups[v.o.Metadata.Project+"/"+v.spec.AntiAffinityGroup] = true
			}
			st.Host, st.Generation, st.Phase = w.name, st.Generation+1, plasmavmcv1.PhaseScheduled
			st.Message = "placed on " + w.name
			addEvent(&st, now, "scheduler", "Scheduled", "placed on %s (generation %d)", w.name, st.Generation)
			s.placed.Add(1)
		default:
			a, ok := newAddrs[apicache.Key(v.o)]
			if !ok {
				continue
			}
			st.Addresses = a
		}
		raw, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		upd := *v.o
		upd.Status = raw
		if _, err := cl.Resources(plasmavmcv1.VMCollection, v.o.Metadata.Project).UpdateStatus(ctx, &upd); err != nil &&
			!client.IsConflict(err) && !client.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("vm %s/%s: %w", v.o.Metadata.Project, v.o.Metadata.Name, err))
		}
	}
	return errors.Join(errs...)
}

// movable reports whether a VM may run on another worker: it has no
// local disk (a kernel image; volumes live on coronafs).
func movable(v vmView, formats map[string]string) bool {
	return formats[v.o.Metadata.Project+"/"+v.spec.Image] == plasmavmcv1.FormatKernel
}

// choose picks a worker for v, or says why none fits.
func choose(v vmView, workers map[string]*workerView) (*workerView, string) {
	var live []*workerView
	for _, w := range workers {
		if w.alive {
			live = append(live, w)
		}
	}
	if len(live) == 0 {
		return nil, fmt.Sprintf("no worker is alive (%d registered)", len(workers))
	}
	slices.SortFunc(live, func(a, b *workerView) int {
		if a.freeMem() != b.freeMem() {
			return b.freeMem() - a.freeMem()
		}
		return strings.Compare(a.name, b.name)
	})
	group := ""
	if v.spec.AntiAffinityGroup != "" {
		group = v.o.Metadata.Project + "/" + v.spec.AntiAffinityGroup
	}
	var excluded []string
	for _, w := range live {
		if w.freeMem() < v.spec.MemoryMiB || w.freeCPU() < v.spec.VCPUs {
			continue
		}
		if group != "" && w.groups[group] {
			excluded = append(excluded, w.name)
			continue
		}
		return w, ""
	}
	if len(excluded) > 0 {
		return nil, fmt.Sprintf("every worker with room already runs a VM of anti-affinity group %q: %s", v.spec.AntiAffinityGroup, strings.Join(excluded, ", "))
	}
	best := live[0] // most free memory
	if best.freeMem() < v.spec.MemoryMiB {
		return nil, fmt.Sprintf("no worker has %s free: largest is %s with %s", mib(v.spec.MemoryMiB), best.name, mib(best.freeMem()))
	}
	cpu := live[0]
	for _, w := range live {
		if w.freeCPU() > cpu.freeCPU() {
			cpu = w
		}
	}
	return nil, fmt.Sprintf("no worker has %d vCPUs free: most is %s with %d", v.spec.VCPUs, cpu.name, cpu.freeCPU())
}

// mib formats MiB as people say it.
func mib(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d GiB", n/1024)
	}
	if n >= 1024 {
		return fmt.Sprintf("%.1f GiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d MiB", n)
}
