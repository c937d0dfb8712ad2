package plasmavmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

var vmCols = []clikit.Column[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus]{
	{Head: "VCPUS", Value: func(o vm) string { return fmt.Sprint(o.Spec.VCPUs) }},
	{Head: "MEMORY", Value: func(o vm) string { return mib(o.Spec.MemoryMiB) }},
	{Head: "IMAGE", Value: func(o vm) string { return o.Spec.Image }},
	{Head: "PHASE", Value: func(o vm) string { return o.Status.Phase }},
	{Head: "HOST", Value: func(o vm) string { return o.Status.Host }},
	{Head: "ADDRESSES", Value: func(o vm) string { return strings.Join(o.Status.Addresses, ",") }},
}

// defaultTimeout bounds --wait.
const defaultTimeout = 5 * time.Minute

// waitFlags are --wait and --timeout.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until "+what+", showing each phase change (on stderr)")
	cmd.Flags().DurationVar(&w.timeout, "timeout", defaultTimeout, "how long --wait waits (implies --wait)")
}

// on says whether to wait: --wait, --timeout, or def when neither flag is
// given.
func (w *waitFlags) on(cmd *cobra.Command, def bool) (bool, error) {
	if w.timeout <= 0 {
		return false, fmt.Errorf("--timeout: %s is not a positive duration such as 90s or 5m", w.timeout)
	}
	switch {
	case cmd.Flags().Changed("wait"):
		if !w.wait && cmd.Flags().Changed("timeout") {
			return false, errors.New("--timeout bounds --wait: drop --wait=false or --timeout")
		}
		return w.wait, nil
	case cmd.Flags().Changed("timeout"):
		return true, nil
	}
	return def, nil
}

func newVMCmd(cf *clikit.ClientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "vm",
		Aliases: []string{"vms"},
		Short:   "Virtual machines: create, list, start, stop, reboot, delete, console, events",
		Long: `A VM runs on a worker the scheduler picks by free vCPUs and memory (and its
anti-affinity group). It boots from an image of its project (ultracloud image),
joins prismnet networks through ports plasmavmc creates, and takes its SSH keys
and user data from the metadata service and a config drive. Its phases:
Pending (waiting for a worker) -> Scheduled -> Starting -> Running; Stopping,
Stopped; Lost (its worker stopped heartbeating); Error (see its last error).`,
	}
	cmd.AddCommand(newVMCreateCmd(cf), clikit.KindListCmd(cf, vms, "VMs", vmCols, nil), clikit.KindGetCmd(cf, vms, vmCols),
		clikit.KindDescribeCmd(cf, vms, nil, describeVM), powerCmd(cf, "start"), powerCmd(cf, "stop"), powerCmd(cf, "reboot"),
		clikit.KindDeleteCmd(cf, vms), newVMEventsCmd(cf), newConsoleCmd(cf))
	return cmd
}

func newVMCreateCmd(cf *clikit.ClientFlags) *cobra.Command {
	var imageName, memory, userData, group, out string
	var vcpus, disk int
	var keys, volumes []string
	var stopped bool
	var nics nicFlags
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "create NAME --image IMAGE --vcpus N --memory SIZE [--disk GiB] [--network NET [--sg GROUP]...]... [--port PORT]... [--volume VOL]... [--user-data FILE|-] [--ssh-key FILE|KEY]... [--anti-affinity GROUP] [--stopped] [--wait [--timeout 5m]]",
		Short: "Create a VM (and, with --wait or on a terminal, follow it until it runs)",
		Long: `Create a VM. With --wait, and by default when stdout is a terminal, the
command follows the VM through Pending -> Scheduled -> Starting -> Running,
printing each phase change with its message and the time since the create, and
fails when the VM ends in Error or --timeout passes. --sg applies to the
--network before it.`,
		Example: `  ultracloud vm create web-1 --image tiny --vcpus 1 --memory 512Mi --network web --sg ssh --ssh-key ~/.ssh/id_ed25519.pub
  ultracloud vm create db-1 --image bookworm --vcpus 2 --memory 2Gi --disk 20 --anti-affinity db --user-data cloud-init.yaml --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env := cf.Env()
			f, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			if imageName == "" || !cmd.Flags().Changed("vcpus") || memory == "" {
				return errors.New("--image, --vcpus and --memory are required, e.g. --image tiny --vcpus 1 --memory 512Mi")
			}
			if nics.err != nil {
				return nics.err
			}
			spec := plasmavmcv1.VMSpec{VCPUs: vcpus, Image: imageName, DiskGiB: disk, Volumes: volumes, NICs: nics.nics,
				AntiAffinityGroup: group}
			if spec.MemoryMiB, err = parseMemory("--memory", memory); err != nil {
				return err
			}
			if disk < 0 {
				return fmt.Errorf("--disk: %d is not a size in GiB (leave it out for the image's size)", disk)
			}
			if userData != "" {
				if spec.UserData, err = readUserData("--user-data", userData, env.Stdin); err != nil {
					return err
				}
			}
			if spec.SSHKeys, err = readKeys("--ssh-key", keys); err != nil {
				return err
			}
			if stopped {
				spec.Power = plasmavmcv1.PowerStopped
			}
			wait, err := wf.on(cmd, isTerminal(env.Stdout) && !stopped)
			if err != nil {
				return err
			}
			if wait && stopped {
				return errors.New("--wait waits for the VM to run, and a --stopped VM does not start: drop one (later: ultracloud vm start NAME --wait)")
			}
			start := time.Now()
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			o, err := vms.Create(ctx, c, args[0], spec)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f == clikit.FormatTable {
				if err := clikit.PrintCreated(w, f, vms.Created(o)); err != nil {
					return err
				}
			}
			if wait {
				rs, err := vms.Handle(ctx, c, false)
				if err != nil {
					return err
				}
				disp := newPhaseDisplay(env.Stderr, isTerminal(env.Stderr), vms.Ref(args[0]), start)
				if o, err = waitVM(ctx, rs, o, runningTarget(), wf.timeout, disp); err != nil {
					return err
				}
			}
			if f != clikit.FormatTable {
				return clikit.PrintData(w, f, o)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&imageName, "image", "", "image of the project to boot (ultracloud image list)")
	fl.IntVar(&vcpus, "vcpus", 0, "virtual CPUs (1 to 64)")
	fl.StringVar(&memory, "memory", "", "guest RAM: 512Mi, 2Gi, 1.5Gi, or a number of MiB")
	fl.IntVar(&disk, "disk", 0, "boot disk size in GiB for raw and qcow2 images (default: the image's size)")
	fl.Var(nicValue{&nics, "network"}, "network", "attach a NIC to this prismnet network (repeat, in order)")
	fl.Var(nicValue{&nics, "sg"}, "sg", "security group of the NIC of the --network before it (repeat)")
	fl.Var(nicValue{&nics, "port"}, "port", "attach a NIC through this existing prismnet port (repeat)")
	fl.StringArrayVar(&volumes, "volume", nil, "attach this coronafs volume after the boot disk (repeat, in order)")
	fl.StringVar(&userData, "user-data", "", "cloud-init user data from FILE, or - for stdin (at most 64 KiB)")
	fl.StringArrayVar(&keys, "ssh-key", nil, `SSH public key: a .pub or authorized_keys FILE, or the key itself ("ssh-ed25519 AAAA...") (repeat)`)
	fl.StringVar(&group, "anti-affinity", "", "anti-affinity group: VMs of the project in one group run on different workers")
	fl.BoolVar(&stopped, "stopped", false, "create it stopped (ultracloud vm start NAME runs it)")
	wf.register(cmd, "the VM runs (default on a terminal)")
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// powerCmd is `vm start|stop|reboot NAME...`: the action on each VM in
// turn, then, with --wait, each VM followed until it is there.
func powerCmd(cf *clikit.ClientFlags, action string) *cobra.Command {
	short := map[string]string{
		"start":  "Start VMs (desired power: running)",
		"stop":   "Stop VMs: ACPI power-off, then forced after the worker's timeout",
		"reboot": "Reboot VMs: ACPI reset request, then forced",
	}[action]
	what := map[string]string{"start": "each VM runs", "stop": "each VM is stopped", "reboot": "each VM runs again after its reboot"}[action]
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   action + " NAME... [--wait [--timeout 5m]]",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env := cf.Env()
			wait, err := wf.on(cmd, false)
			if err != nil {
				return err
			}
			start := time.Now()
			ctx := cmd.Context()
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			rs, err := vms.Handle(ctx, c, false)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			done := make([]*api.Object, 0, len(args))
			for _, name := range args {
				var o api.Object
				if err := c.Client.Do(ctx, http.MethodPost, objectPath(c.Config.Project, vms, name, action), nil, nil, &o); err != nil {
					return fmt.Errorf("%s: %w", vms.Ref(name), err)
				}
				done = append(done, &o)
				fmt.Fprintf(w, "%s: %s requested\n", vms.Ref(name), action)
			}
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(ctx, wf.timeout)
			defer cancel()
			for _, o := range done {
				t := runningTarget()
				switch action {
				case "stop":
					t = stoppedTarget()
				case "reboot":
					v, err := clikit.Decode[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](vms, o)
					if err != nil {
						return err
					}
					t = rebootedTarget(v.Spec.Reboots)
				}
				disp := newPhaseDisplay(env.Stderr, isTerminal(env.Stderr), vms.Ref(o.Metadata.Name), start)
				final, err := waitVM(ctx, rs, o, t, wf.timeout, disp)
				if err != nil {
					return err
				}
				v, _ := clikit.Decode[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](vms, final)
				fmt.Fprintf(w, "%s: %s\n", vms.Ref(o.Metadata.Name), clikit.Dash(v.Status.Phase))
			}
			return nil
		},
	}
	wf.register(cmd, what)
	return cmd
}

func describeVM(d *clikit.Desc, o vm, _ struct{}) {
	s, st := o.Spec, o.Status
	d.KV("Image", s.Image)
	d.KV("vCPUs", fmt.Sprint(s.VCPUs))
	d.KV("Memory", mib(s.MemoryMiB))
	if s.DiskGiB > 0 {
		d.KV("Disk", fmt.Sprintf("%d GiB", s.DiskGiB))
	} else {
		d.KV("Disk", "the image's size")
	}
	d.KV("Volumes", clikit.JoinOr(s.Volumes, "none"))
	d.KV("Power", s.Power)
	d.KV("Anti-affinity", s.AntiAffinityGroup)
	ud := "none"
	if s.UserData != "" {
		ud = clikit.HumanBytes(int64(len(s.UserData)))
	}
	d.KV("User data", ud)
	var keyText []string
	for _, k := range s.SSHKeys {
		f := strings.Fields(k)
		if len(f) > 2 {
			keyText = append(keyText, f[0]+" "+strings.Join(f[2:], " "))
		} else if len(f) > 0 {
			keyText = append(keyText, f[0])
		}
	}
	d.KV("SSH keys", clikit.JoinOr(keyText, "none"))
	var nicRows [][]string
	for i, n := range s.NICs {
		nicRows = append(nicRows, []string{fmt.Sprint(i), n.Network, n.Port, strings.Join(n.SecurityGroups, ",")})
	}
	d.Table("NICs", []string{"#", "NETWORK", "PORT", "SECURITY GROUPS"}, nicRows, "none")
	d.KV("Phase", st.Phase)
	d.KV("Message", st.Message)
	host := st.Host
	if host != "" {
		host = fmt.Sprintf("%s (generation %d)", host, st.Generation)
	} else {
		host = "not placed"
	}
	d.KV("Host", host)
	d.KV("Addresses", clikit.JoinOr(st.Addresses, ""))
	d.KV("Accel", st.Accel)
	d.KV("Last error", st.LastError)
	d.KV("Console", st.Console)
	d.KV("Booted at", clikit.TimeAgo(st.BootedAt))
	if s.Reboots > 0 || st.Reboots > 0 {
		d.KV("Reboots", fmt.Sprintf("%d done of %d asked", st.Reboots, s.Reboots))
	}
	const lastEvents = 10
	evs := st.Events
	heading := "Events"
	if len(evs) > lastEvents {
		evs = evs[len(evs)-lastEvents:]
		heading = fmt.Sprintf("Events (the last %d; ultracloud vm events %s)", lastEvents, o.Name())
	}
	var rows [][]string
	for _, e := range evs {
		t := e.Time
		rows = append(rows, []string{clikit.Age(&t), e.Source, e.Reason, e.Message})
	}
	d.Table(heading, []string{"AGE", "SOURCE", "REASON", "MESSAGE"}, rows, "none")
}

// vmEvents is what `vm events` prints.
type vmEvents struct {
	Events []plasmavmcv1.Event `json:"events"`
}

func newVMEventsCmd(cf *clikit.ClientFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "events NAME",
		Short: "List a VM's lifecycle events (the latest 50), oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.Run(cmd, cf, out, func(ctx context.Context, c *clikit.Conn) (vmEvents, error) {
				v, err := clikit.Get[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](ctx, c, vms, args[0])
				if err != nil {
					return vmEvents{}, err
				}
				return vmEvents{Events: v.Status.Events}, nil
			}, clikit.Table(func(w io.Writer, l vmEvents) error {
				if len(l.Events) == 0 {
					_, err := fmt.Fprintln(w, "No events.")
					return err
				}
				tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "TIME\tSOURCE\tREASON\tMESSAGE")
				for _, e := range l.Events {
					t := e.Time
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", clikit.Age(&t), clikit.Dash(e.Source), clikit.Dash(e.Reason), clikit.Dash(e.Message))
				}
				return tw.Flush()
			}))
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}
