package plasmavmc

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

var workerCols = []column[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus]{
	{"VCPUS", func(o worker) string { return fmt.Sprint(o.Status.VCPUs) }},
	{"MEMORY", func(o worker) string { return mib(o.Status.MemoryMiB) }},
	{"ACCEL", func(o worker) string { return o.Status.Accel }},
	{"VMS", func(o worker) string { return fmt.Sprint(o.Status.VMs) }},
	{"OBSERVED", func(o worker) string {
		if o.Status.ObservedAt == nil {
			return "never"
		}
		return clikit.Age(o.Status.ObservedAt) + " ago"
	}},
}

func newWorkerCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "worker",
		Aliases: []string{"workers"},
		Short:   "Workers: the hosts whose plasmavmc-agent runs VMs (capacity, accelerator, VMs)",
		Long: `A worker is a host running the plasmavmc-agent role. Its agent registers it and
reports what it offers (vCPUs, memory, KVM or TCG) and heartbeats; the
scheduler places VMs only on workers whose heartbeat is current.`,
	}
	cmd.AddCommand(listCmd(cf, workers, "workers", workerCols), describeCmd(cf, workers, workerVMs, describeWorker))
	return cmd
}

// workerUse is what a worker's describe shows beyond the worker: the VMs
// placed on it, of every project the caller may see.
type workerUse struct {
	vms []vm
	err error
}

func workerVMs(ctx context.Context, c *clikit.Conn, o worker) workerUse {
	l, err := list[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](ctx, c, vms, true)
	if err != nil {
		return workerUse{err: err}
	}
	var u workerUse
	for _, v := range l.items {
		if v.Status.Host == o.name() {
			u.vms = append(u.vms, v)
		}
	}
	return u
}

func describeWorker(d *desc, o worker, u workerUse) {
	st := o.Status
	d.kv("vCPUs", fmt.Sprint(st.VCPUs))
	d.kv("Memory", mib(st.MemoryMiB))
	accel := st.Accel
	if st.AccelReason != "" {
		accel += " (" + st.AccelReason + ")"
	}
	d.kv("Accel", accel)
	d.kv("VMs running", fmt.Sprint(st.VMs))
	observed := timeAgo(st.ObservedAt)
	if observed == "" {
		observed = "never (its agent has not reported; the scheduler places nothing here)"
	}
	d.kv("Observed", observed)
	if u.err != nil {
		d.kv("Placed VMs", fmt.Sprintf("cannot be read: %v", u.err))
		return
	}
	cpu, mem := 0, 0
	var rows [][]string
	for _, v := range u.vms {
		if v.Status.Phase != plasmavmcv1.PhaseLost {
			cpu += v.Spec.VCPUs
			mem += v.Spec.MemoryMiB
		}
		rows = append(rows, []string{v.Raw.Metadata.Project, v.name(), fmt.Sprint(v.Spec.VCPUs), mib(v.Spec.MemoryMiB), v.Status.Phase,
			fmt.Sprint(v.Status.Generation)})
	}
	d.kv("Allocated", fmt.Sprintf("%d of %d vCPUs, %s of %s", cpu, st.VCPUs, mibOrZero(mem), mibOrZero(st.MemoryMiB)))
	d.table("Placed VMs", []string{"PROJECT", "NAME", "VCPUS", "MEMORY", "PHASE", "GENERATION"}, rows, "none")
}

func mibOrZero(n int) string {
	if n == 0 {
		return "0 MiB"
	}
	return mib(n)
}
