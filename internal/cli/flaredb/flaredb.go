// Package flaredb holds the operator verbs of flaredb, `ultracloud flaredb
// status|member|snapshot`. They speak the members' own protocol through
// internal/flaredb/client and internal/flaredb/wire, and never import the
// member itself: checking a snapshot file and building a data directory
// from one need the member's storage code, so the command tree passes them
// in (Offline).
package flaredb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Offline are the verbs that read or write the member's on-disk formats
// instead of talking to a cluster.
type Offline struct {
	// Inspect reads and checks a whole snapshot file, writing nothing.
	Inspect func(path string) (SnapshotFile, error)
	// Restore builds a member's data directory from a snapshot file.
	Restore func(ctx context.Context, r RestoreRequest) (RestoreResult, error)
}

// SnapshotFile describes a checked snapshot file.
type SnapshotFile struct {
	Bytes, Revision, Compacted int64
	Keys                       uint64
}

// RestoreRequest says what a restore builds: the data directory of member
// ID of cluster ClusterID, whose voters are InitialVoters.
type RestoreRequest struct {
	SnapshotPath, DataDir, ID, ClusterID string
	InitialVoters                        []client.Peer
}

// RestoreResult describes a restored data directory.
type RestoreResult struct {
	DataDir  string
	Revision int64
	Keys     uint64
}

// flags say how to reach a flaredb cluster's API.
type flags struct {
	env       clikit.Env
	endpoints string
	clusterID string
	timeout   time.Duration
	// TLS files for a cluster that serves mutual TLS (flaredb.tls).
	caFile, certFile, keyFile string
}

const defaultEndpoint = client.DefaultAPIAddress

func (f *flags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.endpoints, "endpoints", "", "comma-separated flaredb API addresses, host:port (env ULTRACLOUD_FLAREDB_ENDPOINTS; default "+defaultEndpoint+")")
	pf.StringVar(&f.clusterID, "cluster-id", "", "the cluster's flaredb.clusterID (env ULTRACLOUD_FLAREDB_CLUSTER_ID; default the node name, as `up` uses)")
	pf.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the cluster")
	pf.StringVar(&f.caFile, "cacert", "", "CA certificate of the cluster (for members with flaredb.tls; env ULTRACLOUD_FLAREDB_CACERT)")
	pf.StringVar(&f.certFile, "cert", "", "client certificate signed by that CA (env ULTRACLOUD_FLAREDB_CERT)")
	pf.StringVar(&f.keyFile, "key", "", "client key (env ULTRACLOUD_FLAREDB_KEY)")
}

// tlsFiles returns the TLS files from the flags or the environment; all
// empty means plaintext (members on loopback with allowPlaintext).
func (f *flags) tlsFiles() (ca, cert, key string, err error) {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return f.env.Getenv(env)
	}
	ca, cert, key = pick(f.caFile, "ULTRACLOUD_FLAREDB_CACERT"), pick(f.certFile, "ULTRACLOUD_FLAREDB_CERT"), pick(f.keyFile, "ULTRACLOUD_FLAREDB_KEY")
	if (ca != "" || cert != "" || key != "") && (ca == "" || cert == "" || key == "") {
		return "", "", "", errors.New("--cacert, --cert and --key go together: the members require a client certificate from the cluster CA")
	}
	return ca, cert, key, nil
}

// endpointList returns the endpoints, checked.
func (f *flags) endpointList() ([]string, error) {
	raw, from := f.endpoints, "--endpoints"
	if raw == "" {
		raw, from = f.env.Getenv("ULTRACLOUD_FLAREDB_ENDPOINTS"), "ULTRACLOUD_FLAREDB_ENDPOINTS"
	}
	if raw == "" {
		return []string{defaultEndpoint}, nil
	}
	var eps []string
	for _, e := range strings.Split(raw, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if err := checkHostPort(e, false); err != nil {
			return nil, fmt.Errorf("%s: %q: %v", from, e, err)
		}
		if !slices.Contains(eps, e) {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%s is empty: give flaredb API addresses (e.g. %s)", from, defaultEndpoint)
	}
	return eps, nil
}

// cluster returns the cluster ID: the flag, the environment, or the node
// name the single-node profile uses.
func (f *flags) cluster() string {
	if f.clusterID != "" {
		return f.clusterID
	}
	if v := f.env.Getenv("ULTRACLOUD_FLAREDB_CLUSTER_ID"); v != "" {
		return v
	}
	return clikit.NodeName(f.env)
}

// connect returns a client for the cluster.
func (f *flags) connect() (*client.Client, []string, error) {
	eps, err := f.endpointList()
	if err != nil {
		return nil, nil, err
	}
	if f.timeout <= 0 {
		return nil, nil, fmt.Errorf("--timeout %s must be positive", f.timeout)
	}
	cid := f.cluster()
	if len(cid) > wire.MaxIDLen {
		return nil, nil, fmt.Errorf("--cluster-id %q is longer than %d bytes", cid, wire.MaxIDLen)
	}
	ca, cert, key, err := f.tlsFiles()
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(client.Config{Endpoints: eps, ClusterID: cid, RequestTimeout: f.timeout, DialTimeout: min(2*time.Second, f.timeout),
		CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		return nil, nil, err
	}
	return c, eps, nil
}

// session connects and returns the client, a context bounded by --timeout,
// and a function that releases both.
func (f *flags) session(parent context.Context) (*client.Client, context.Context, func(), error) {
	c, _, err := f.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, f.timeout)
	return c, ctx, func() { cancel(); c.Close() }, nil
}

// checkHostPort checks a host:port address; listen allows a wildcard host.
func checkHostPort(addr string, listen bool) error {
	if strings.Contains(addr, "://") {
		return errors.New("give host:port without a scheme (e.g. 10.0.0.1:7711)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("not host:port (e.g. 10.0.0.1:7711)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q must be a number from 1 to 65535", port)
	}
	if !listen && (host == "" || host == "0.0.0.0" || host == "::") {
		return errors.New("not an address others can dial: give a routable host")
	}
	return nil
}

// explain adds the likely fix to errors operators meet first.
func (f *flags) explain(err error) error {
	switch {
	case errors.Is(err, wire.ErrWrongCluster):
		return fmt.Errorf("%w (check --cluster-id; it was %q)", err, f.cluster())
	case errors.Is(err, wire.ErrUnknownMember):
		return fmt.Errorf("%w (see `ultracloud flaredb member list`)", err)
	}
	return err
}

// NewCmd is `ultracloud flaredb`.
func NewCmd(env clikit.Env, off Offline) *cobra.Command {
	f := &flags{env: env}
	cmd := &cobra.Command{
		Use:   "flaredb",
		Short: "Operate the flaredb store (status, members, snapshots)",
		Long: `flaredb operates a flaredb cluster through its API (default ` + defaultEndpoint + `, the
member ` + "`ultracloud up`" + ` runs; its cluster ID is the node name). Point --endpoints at
any members: the others are found from them.`,
	}
	f.register(cmd)
	cmd.AddCommand(newStatusCmd(f), newMemberCmd(f), newSnapshotCmd(f, off))
	return cmd
}

// StatusRow is one member (or unknown endpoint) in `flaredb status` (its
// JSON form is the -o json output).
type StatusRow struct {
	ID                string `json:"id,omitempty"`
	APIAddress        string `json:"apiAddress"`
	RaftAddress       string `json:"raftAddress,omitempty"`
	Voter             bool   `json:"voter"`
	State             string `json:"state,omitempty"`
	Leader            string `json:"leader,omitempty"`
	Term              uint64 `json:"term,omitempty"`
	CommitIndex       uint64 `json:"commitIndex,omitempty"`
	AppliedIndex      uint64 `json:"appliedIndex,omitempty"`
	Revision          int64  `json:"revision,omitempty"`
	Compacted         int64  `json:"compactedRevision,omitempty"`
	DBSize            int64  `json:"dbSizeBytes,omitempty"`
	LastSnapshotIndex uint64 `json:"lastSnapshotIndex,omitempty"`
	LastSnapshotTime  string `json:"lastSnapshotTime,omitempty"`
	LastSnapshotSize  int64  `json:"lastSnapshotBytes,omitempty"`
	Error             string `json:"error,omitempty"`
}

type statusAnswer struct {
	st  wire.Status
	err error
}

// queryStatus asks every address for its status in parallel.
func queryStatus(ctx context.Context, c *client.Client, addrs []string) map[string]statusAnswer {
	out := make(map[string]statusAnswer, len(addrs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			st, err := c.Status(ctx, a)
			mu.Lock()
			out[a] = statusAnswer{st, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// clusterStatus asks the endpoints, then every member they name, and
// returns one row per member, then rows for endpoints that are not members.
func (f *flags) clusterStatus(ctx context.Context, c *client.Client, eps []string) ([]StatusRow, int) {
	answers := queryStatus(ctx, c, eps)
	// The member list: the leader's view if an answer is from the leader,
	// else the first answer's.
	var members []wire.Member
	for _, ep := range eps {
		a := answers[ep]
		if a.err != nil {
			continue
		}
		if members == nil || a.st.State == "Leader" {
			members = a.st.Members
		}
	}
	var more []string
	for _, m := range members {
		if _, ok := answers[m.APIAddress]; !ok && m.APIAddress != "" {
			more = append(more, m.APIAddress)
		}
	}
	for a, ans := range queryStatus(ctx, c, more) {
		answers[a] = ans
	}
	var rows []StatusRow
	answered := 0
	row := func(addr string, m wire.Member) StatusRow {
		r := StatusRow{ID: m.ID, APIAddress: addr, RaftAddress: m.RaftAddress, Voter: m.Voter}
		a, ok := answers[addr]
		switch {
		case !ok:
			r.Error = "no API address known"
		case a.err != nil:
			r.Error = shortStatusError(f.explain(a.err))
		default:
			answered++
			st := a.st
			if r.ID == "" {
				r.ID = st.ID
			}
			r.State, r.Leader, r.Term = strings.ToLower(st.State), st.Leader.ID, st.Term
			r.CommitIndex, r.AppliedIndex, r.Revision, r.Compacted = st.CommitIndex, st.AppliedIndex, st.Revision, st.Compacted
			r.DBSize, r.LastSnapshotIndex, r.LastSnapshotSize = st.DBSize, st.LastSnapshotIndex, st.LastSnapshotSize
			if st.LastSnapshotTime > 0 {
				r.LastSnapshotTime = time.UnixMilli(st.LastSnapshotTime).UTC().Format(time.RFC3339)
			}
			if m.ID != "" && st.ID != m.ID {
				r.Error = fmt.Sprintf("member %q answers at this address", st.ID)
			}
		}
		return r
	}
	seen := map[string]bool{}
	for _, m := range members {
		rows = append(rows, row(m.APIAddress, m))
		seen[m.APIAddress] = true
	}
	for _, ep := range eps {
		if !seen[ep] {
			r := row(ep, wire.Member{})
			if r.Error == "" && len(members) > 0 {
				r.Error = "not in the cluster's configuration"
			}
			rows = append(rows, r)
		}
	}
	return rows, answered
}

// shortStatusError renders a member's status error for a table cell:
// without the call's prefix, and a failed dial as "unreachable".
func shortStatusError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		var oe *net.OpError
		if errors.As(ue.Err, &oe) && oe.Op == "dial" {
			return "unreachable: " + oe.Err.Error()
		}
		return ue.Err.Error()
	}
	return strings.TrimPrefix(err.Error(), "flaredb: status: ")
}

func newStatusCmd(f *flags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member's role, term, applied index, revision, database size and last snapshot",
		Long: `status asks the endpoints and every member they know for their status and prints
one row per member. A member that does not answer gets a row with the error; the
command fails only if no member answered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			of, err := clikit.ParseOutput(out)
			if err != nil {
				return err
			}
			c, eps, err := f.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			rows, answered := f.clusterStatus(ctx, c, eps)
			if err := clikit.Table(printStatus)(cmd.OutOrStdout(), of, rows); err != nil {
				return err
			}
			if answered == 0 {
				var first string
				for _, r := range rows {
					if r.Error != "" {
						first = r.Error
						break
					}
				}
				hint := ""
				if ca, _, _, _ := f.tlsFiles(); ca == "" {
					// A TLS member drops a plaintext client mid-handshake,
					// which only shows as EOF or a reset.
					hint = " (if the members use flaredb.tls, pass --cacert, --cert and --key)"
				}
				return fmt.Errorf("no flaredb member answered at %s: %s%s", strings.Join(eps, ","), first, hint)
			}
			return nil
		},
	}
	clikit.OutputFlag(cmd, &out)
	return cmd
}

// printStatus prints the status rows as a table.
func printStatus(w io.Writer, rows []StatusRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPI ADDRESS\tSTATE\tTERM\tAPPLIED\tREVISION\tCOMPACTED\tDB SIZE\tLAST SNAPSHOT\tERROR")
	for _, r := range rows {
		state, snap, size, e := dash(r.State), "-", "-", dash(r.Error)
		if !r.Voter && r.State != "" && r.ID != "" {
			state += " (non-voter)"
		}
		if r.LastSnapshotIndex > 0 {
			snap = fmt.Sprintf("%d", r.LastSnapshotIndex)
			if r.LastSnapshotTime != "" {
				if t, err := time.Parse(time.RFC3339, r.LastSnapshotTime); err == nil {
					snap += " (" + clikit.Age(&t) + " ago)"
				}
			}
		}
		if r.State != "" {
			size = clikit.HumanBytes(r.DBSize)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", dash(r.ID), r.APIAddress, state, r.Term, r.AppliedIndex, r.Revision, r.Compacted, size, snap, e)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", dash(r.ID), r.APIAddress, e)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Member is one row of `flaredb member list`.
type Member struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raftAddress"`
	APIAddress  string `json:"apiAddress"`
	Voter       bool   `json:"voter"`
	Leader      bool   `json:"leader"`
}

// membership returns the cluster's configuration as the leader sees it
// (or as any member sees it when there is no leader).
func membership(ctx context.Context, c *client.Client) (wire.Status, error) {
	st, err := c.Status(ctx, "")
	if err != nil {
		return st, err
	}
	if st.State != "Leader" && st.Leader.APIAddress != "" {
		if lst, err := c.Status(ctx, st.Leader.APIAddress); err == nil {
			return lst, nil
		}
	}
	return st, nil
}

func printMembers(w io.Writer, ms []Member) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tAPI ADDRESS\tVOTER\tLEADER")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\n", m.ID, m.RaftAddress, dash(m.APIAddress), m.Voter, m.Leader)
	}
	return tw.Flush()
}

func newMemberCmd(f *flags) *cobra.Command {
	var out string
	cmd := &cobra.Command{Use: "member", Short: "List, add and remove flaredb members, move leadership"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return clikit.RunWith(cmd, out, f.session, func(ctx context.Context, c *client.Client) ([]Member, error) {
				st, err := membership(ctx, c)
				if err != nil {
					return nil, f.explain(err)
				}
				ms := make([]Member, 0, len(st.Members))
				for _, m := range st.Members {
					ms = append(ms, Member{ID: m.ID, RaftAddress: m.RaftAddress, APIAddress: m.APIAddress, Voter: m.Voter, Leader: m.ID == st.Leader.ID})
				}
				return ms, nil
			}, clikit.Table(printMembers))
		},
	}
	clikit.OutputFlag(list, &out)

	var raftAddr, apiAddr string
	add := &cobra.Command{
		Use:   "add ID --raft-address HOST:PORT --api-address HOST:PORT",
		Short: "Add a voter; then start it with flaredb.join (prefer just starting it with join: it adds itself)",
		Long: `add makes ID a voter at the given addresses. Start the member right after: until it
has caught up it counts towards the quorum without voting (adding a second
member to a one-member cluster stops writes until the new member runs). A member
started with flaredb.join adds itself, so this command is only needed to
pre-register it or to change a member's raft address.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m := wire.Member{ID: args[0], RaftAddress: raftAddr, APIAddress: apiAddr, Voter: true}
			if m.ID == "" || len(m.ID) > wire.MaxIDLen {
				return fmt.Errorf("member ID %q must be 1 to %d bytes", m.ID, wire.MaxIDLen)
			}
			for _, a := range [][2]string{{"--raft-address", raftAddr}, {"--api-address", apiAddr}} {
				if a[1] == "" {
					return fmt.Errorf("%s is required (host:port the other members reach)", a[0])
				}
				if err := checkHostPort(a[1], false); err != nil {
					return fmt.Errorf("%s %q: %v", a[0], a[1], err)
				}
			}
			// The configuration before the add: the other members to join.
			return clikit.RunWith(cmd, "", f.session, func(ctx context.Context, c *client.Client) (wire.Status, error) {
				st, err := membership(ctx, c)
				if err != nil {
					return st, f.explain(err)
				}
				if err := c.AddMember(ctx, m); err != nil {
					return st, f.explain(err)
				}
				return st, nil
			}, clikit.Table(func(w io.Writer, st wire.Status) error {
				voters := 1
				for _, o := range st.Members {
					if o.Voter && o.ID != m.ID {
						voters++
					}
				}
				fmt.Fprintf(w, "Member %s added (raft %s, api %s); the cluster has %d voters and needs %d for a quorum.\n", m.ID, m.RaftAddress, m.APIAddress, voters, voters/2+1)
				fmt.Fprintf(w, "Start it now with this flaredb config:\n")
				fmt.Fprintf(w, "  id: %s\n  clusterID: %s\n  raftAddress: %s\n  apiAddress: %s\n  join:\n", m.ID, st.ClusterID, m.RaftAddress, m.APIAddress)
				for _, o := range st.Members {
					if o.ID != m.ID && o.APIAddress != "" {
						fmt.Fprintf(w, "    - %s\n", o.APIAddress)
					}
				}
				return nil
			}))
		},
	}
	add.Flags().StringVar(&raftAddr, "raft-address", "", "the new member's raft address (its flaredb.raftAdvertise)")
	add.Flags().StringVar(&apiAddr, "api-address", "", "the new member's API address (its flaredb.apiAdvertise)")

	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member from the cluster (a leader removing itself steps down)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clikit.RunWith(cmd, "", f.session, func(ctx context.Context, c *client.Client) (string, error) {
				return args[0], f.explain(c.RemoveMember(ctx, args[0]))
			}, clikit.Table(func(w io.Writer, id string) error {
				_, err := fmt.Fprintf(w, "Member %s removed. Stop it and delete its data directory before it joins again.\n", id)
				return err
			}))
		},
	}

	transfer := &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Hand leadership to member ID (without ID: to the most up-to-date follower)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return clikit.RunWith(cmd, "", f.session, func(ctx context.Context, c *client.Client) (string, error) {
				if err := c.TransferLeadership(ctx, id); err != nil {
					return "", f.explain(err)
				}
				// Report the leader the cluster settled on.
				for ctx.Err() == nil {
					if st, err := membership(ctx, c); err == nil && st.Leader.ID != "" && (id == "" || st.Leader.ID == id) {
						return st.Leader.ID, nil
					}
					time.Sleep(50 * time.Millisecond)
				}
				return "", nil
			}, clikit.Table(func(w io.Writer, leader string) error {
				if leader == "" {
					_, err := fmt.Fprintln(w, "Leadership transfer requested; no leader confirmed yet (see `ultracloud flaredb status`).")
					return err
				}
				_, err := fmt.Fprintf(w, "Leader is now %s.\n", leader)
				return err
			}))
		},
	}
	cmd.AddCommand(list, add, remove, transfer)
	return cmd
}

// progressWriter counts bytes and reports them on a terminal-ish writer at
// most once a second.
type progressWriter struct {
	w       io.Writer
	n       atomic.Int64
	last    atomic.Int64 // unix nanos of the last write
	report  io.Writer
	started time.Time
	shown   time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n.Add(int64(n))
	now := time.Now()
	p.last.Store(now.UnixNano())
	if now.Sub(p.shown) >= time.Second && now.Sub(p.started) >= time.Second {
		p.shown = now
		fmt.Fprintf(p.report, "  %s received (%s)\n", clikit.HumanBytes(p.n.Load()), now.Sub(p.started).Round(time.Second))
	}
	return n, err
}

// SnapshotInfo is what `snapshot save` reports.
type SnapshotInfo struct {
	Path      string `json:"path"`
	Bytes     int64  `json:"bytes"`
	Revision  int64  `json:"revision"`
	Compacted int64  `json:"compactedRevision"`
	Keys      uint64 `json:"keys"`
}

// saveSnapshot streams a snapshot into path.part, checks it with inspect,
// syncs it and renames it to path. A stream that makes no progress for idle
// is abandoned.
func saveSnapshot(ctx context.Context, c *client.Client, inspect func(string) (SnapshotFile, error), path string, idle time.Duration, progress io.Writer) (SnapshotInfo, error) {
	info := SnapshotInfo{Path: path}
	part := path + ".part"
	fh, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return info, err
	}
	ok := false
	defer func() {
		if !ok {
			fh.Close()
			os.Remove(part)
		}
	}()
	if err := fh.Chmod(0o600); err != nil {
		return info, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pw := &progressWriter{w: fh, report: progress, started: time.Now()}
	pw.last.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(idle / 10)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if time.Since(time.Unix(0, pw.last.Load())) > idle {
					cancel(fmt.Errorf("no snapshot data for %s (--timeout)", idle))
					return
				}
			}
		}
	}()
	if err := c.SaveSnapshot(ctx, pw); err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return info, fmt.Errorf("%w: %v", err, cause)
		}
		return info, err
	}
	if err := fh.Sync(); err != nil {
		return info, err
	}
	if err := fh.Close(); err != nil {
		return info, err
	}
	si, err := inspect(part)
	if err != nil {
		return info, fmt.Errorf("the received snapshot does not check out: %w", err)
	}
	if err := os.Rename(part, path); err != nil {
		return info, err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	info.Bytes, info.Revision, info.Compacted, info.Keys = si.Bytes, si.Revision, si.Compacted, si.Keys
	return info, nil
}

// parseVoters parses id=raftAddress=apiAddress entries.
func parseVoters(entries []string) ([]client.Peer, error) {
	var ps []client.Peer
	for _, e := range entries {
		parts := strings.Split(e, "=")
		if len(parts) != 3 || parts[0] == "" {
			return nil, fmt.Errorf("--initial-voters entry %q: want id=raftHost:port=apiHost:port", e)
		}
		for _, a := range parts[1:] {
			if err := checkHostPort(a, false); err != nil {
				return nil, fmt.Errorf("--initial-voters entry %q: %q: %v", e, a, err)
			}
		}
		ps = append(ps, client.Peer{ID: parts[0], RaftAddress: parts[1], APIAddress: parts[2]})
	}
	return ps, nil
}

func newSnapshotCmd(f *flags, off Offline) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save a snapshot of the store, or build a member's data directory from one"}
	var out string
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the whole store to FILE (mode 0600)",
		Long: `save streams a snapshot that holds every write acknowledged before the command
started into FILE.part, checks it, syncs it and renames it to FILE. It gives up
when no data arrives for --timeout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// No --timeout context: a large snapshot takes as long as it
			// takes while data keeps arriving.
			open := func(ctx context.Context) (*client.Client, context.Context, func(), error) {
				c, _, err := f.connect()
				if err != nil {
					return nil, nil, nil, err
				}
				return c, ctx, func() { c.Close() }, nil
			}
			return clikit.RunWith(cmd, out, open, func(ctx context.Context, c *client.Client) (SnapshotInfo, error) {
				fmt.Fprintf(cmd.ErrOrStderr(), "Saving snapshot to %s ...\n", args[0])
				info, err := saveSnapshot(ctx, c, off.Inspect, args[0], f.timeout, cmd.ErrOrStderr())
				if err != nil {
					return info, f.explain(err)
				}
				return info, nil
			}, clikit.Table(func(w io.Writer, info SnapshotInfo) error {
				_, err := fmt.Fprintf(w, "Saved %s: revision %d (compacted %d), %d keys, %s.\n", info.Path, info.Revision, info.Compacted, info.Keys, clikit.HumanBytes(info.Bytes))
				return err
			}))
		},
	}
	save.Flags().StringVarP(&out, "output", "o", "table", "output format: table (a sentence), json or yaml")

	var dataDir, id string
	var voters []string
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR [--id ID] [--cluster-id CID] [--initial-voters id=raftAddr=apiAddr,...]",
		Short: "Build a member's data directory from a snapshot (offline; the directory must be new or empty)",
		Long: `restore builds a fresh flaredb data directory from a snapshot file, for disaster
recovery. Restore every member of the new cluster from the same file with the
same --cluster-id and --initial-voters (each with its own --id and --data-dir),
then start them: they form a new cluster holding exactly the snapshot's data,
continuing its revisions. Nothing is written if the file is damaged.

--id defaults to the node name and --initial-voters to that one member at the
single-node addresses (127.0.0.1:7710 raft, 127.0.0.1:7711 API), which is what
` + "`ultracloud up`" + ` runs; its data directory is <dataDir>/flaredb (stop up first and
move the old directory away).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required: the member's new flaredb data directory")
			}
			if id == "" {
				id = clikit.NodeName(f.env)
			}
			ps, err := parseVoters(voters)
			if err != nil {
				return err
			}
			if len(ps) == 0 {
				ps = []client.Peer{{ID: id, RaftAddress: client.DefaultRaftAddress, APIAddress: client.DefaultAPIAddress}}
			}
			cid := f.cluster()
			res, err := off.Restore(cmd.Context(), RestoreRequest{
				SnapshotPath: args[0], DataDir: dataDir, ID: id, ClusterID: cid, InitialVoters: ps,
			})
			if err != nil {
				return err
			}
			var self client.Peer
			for _, p := range ps {
				if p.ID == id {
					self = p
				}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Restored %s (revision %d, %d keys) into %s as member %s of cluster %s.\n", args[0], res.Revision, res.Keys, res.DataDir, id, cid)
			fmt.Fprintf(w, "Start it with this flaredb config (and every other member from the same file):\n")
			fmt.Fprintf(w, "  id: %s\n  clusterID: %s\n  dataDir: %s\n  raftAddress: %s\n  apiAddress: %s\n  initialVoters:\n", id, cid, res.DataDir, self.RaftAddress, self.APIAddress)
			for _, p := range ps {
				fmt.Fprintf(w, "    - {id: %s, raftAddress: %s, apiAddress: %s}\n", p.ID, p.RaftAddress, p.APIAddress)
			}
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "the member's flaredb data directory to create (must not exist, or be empty)")
	restore.Flags().StringVar(&id, "id", "", "the member's flaredb.id (default the node name)")
	restore.Flags().StringSliceVar(&voters, "initial-voters", nil, "every member of the restored cluster as id=raftHost:port=apiHost:port (default this member on 127.0.0.1:7710/7711)")
	cmd.AddCommand(save, restore)
	return cmd
}
