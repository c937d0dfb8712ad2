package plasmavmc

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

var workerCols = []clikit.Column[plasmavmcv1.WorkerSpec, plasmavmcv1.WorkerStatus]{
	{Head: "VCPUS", Value: func(o worker) string { return fmt.Sprint(o.Status.VCPUs) }},
	{Head: "MEMORY", Value: func(o worker) string { return mib(o.Status.MemoryMiB) }},
	{Head: "ACCEL", Value: func(o worker) string { return o.Status.Accel }},
	{Head: "VMS", Value: func(o worker) string { return fmt.Sprint(o.Status.VMs) }},
	{Head: "OBSERVED", Value: func(o worker) string {
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
	cmd.AddCommand(clikit.KindListCmd(cf, workers, "workers", workerCols, nil), clikit.KindDescribeCmd(cf, workers, workerVMs, describeWorker))
	return cmd
}

// workerUse is what a worker's describe shows beyond the worker: the VMs
// placed on it, of every project the caller may see.
type workerUse struct {
	vms []vm
	err error
}

func workerVMs(ctx context.Context, c *clikit.Conn, o worker) workerUse {
	vs, err := clikit.ListWhere(ctx, c, vms, true, func(v vm) bool { return v.Status.Host == o.Name() })
	return workerUse{vms: vs, err: err}
}

func describeWorker(d *clikit.Desc, o worker, u workerUse) {
	st := o.Status
	d.KV("vCPUs", fmt.Sprint(st.VCPUs))
	d.KV("Memory", mib(st.MemoryMiB))
	accel := st.Accel
	if st.AccelReason != "" {
		accel += " (" + st.AccelReason + ")"
	}
	d.KV("Accel", accel)
	d.KV("VMs running", fmt.Sprint(st.VMs))
	observed := clikit.TimeAgo(st.ObservedAt)
	if observed == "" {
		observed = "never (its agent has not reported; the scheduler places nothing here)"
	}
	d.KV("Observed", observed)
	if u.err != nil {
		d.KV("Placed VMs", fmt.Sprintf("cannot be read: %v", u.err))
		return
	}
	cpu, mem := 0, 0
	var rows [][]string
	for _, v := range u.vms {
		if v.Status.Phase != plasmavmcv1.PhaseLost {
			cpu += v.Spec.VCPUs
			mem += v.Spec.MemoryMiB
		}
		rows = append(rows, []string{v.Raw.Metadata.Project, v.Name(), fmt.Sprint(v.Spec.VCPUs), mib(v.Spec.MemoryMiB), v.Status.Phase,
			fmt.Sprint(v.Status.Generation)})
	}
	d.KV("Allocated", fmt.Sprintf("%d of %d vCPUs, %s of %s", cpu, st.VCPUs, mibOrZero(mem), mibOrZero(st.MemoryMiB)))
	d.Table("Placed VMs", []string{"PROJECT", "NAME", "VCPUS", "MEMORY", "PHASE", "GENERATION"}, rows, "none")
}

func mibOrZero(n int) string {
	if n == 0 {
		return "0 MiB"
	}
	return mib(n)
}
