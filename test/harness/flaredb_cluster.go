//go:build linux

package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// prepareFlareDB creates the Spec.FlareDB cluster CA and the test client's
// certificate before the node configs are rendered.
func (c *Cluster) prepareFlareDB() error {
	fd := c.plan.flaredb
	if fd == nil {
		return nil
	}
	var err error
	fd.caFile, fd.caKeyFile, err = pki.GenerateCA(filepath.Join(c.workDir, FlareDBCADir), "harness flaredb CA "+c.plan.name)
	if err != nil {
		return fmt.Errorf("harness: flaredb CA: %w", err)
	}
	if _, _, err := pki.IssueCert(fd.caFile, fd.caKeyFile, filepath.Join(c.workDir, FlareDBClientDir), "harness-client", nil); err != nil {
		return fmt.Errorf("harness: flaredb client certificate: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("harness: iam key: %w", err)
	}
	fd.iamKeyFile = filepath.Join(c.workDir, IAMKeyFile)
	if err := os.WriteFile(fd.iamKeyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("harness: iam key: %w", err)
	}
	return nil
}

// FlareDBTLSFiles are the PEM files a flaredb client of the Spec.FlareDB
// cluster needs, as internal/flaredb/client.Config's CAFile, CertFile and
// KeyFile: the cluster CA and a client certificate the harness issued from
// it. They are "" without Spec.FlareDB.
func (c *Cluster) FlareDBTLSFiles() (caFile, certFile, keyFile string) {
	if c.plan.flaredb == nil {
		return "", "", ""
	}
	dir := filepath.Join(c.workDir, FlareDBClientDir)
	return filepath.Join(c.workDir, FlareDBCADir, pki.CACertName), filepath.Join(dir, pki.MemberCertName), filepath.Join(dir, pki.MemberKeyName)
}

// FlareDBClusterID is the cluster ID of the Spec.FlareDB cluster ("" without
// Spec.FlareDB). Clients must send it.
func (c *Cluster) FlareDBClusterID() string {
	if c.plan.flaredb == nil {
		return ""
	}
	return c.plan.flaredb.clusterID
}

// FlareDBMembers are the hosts of the Spec.FlareDB cluster, in spec order
// (nil without Spec.FlareDB).
func (c *Cluster) FlareDBMembers() []*Host {
	if c.plan.flaredb == nil {
		return nil
	}
	var hs []*Host
	for _, name := range c.plan.flaredb.members {
		hs = append(hs, c.byName[name])
	}
	return hs
}

// FlareDBEndpoints are the members' API addresses (host:port), in spec
// order, as internal/flaredb/client.Config.Endpoints takes them. They are
// reachable only from inside the run's namespaces.
func (c *Cluster) FlareDBEndpoints() []string { return c.plan.flaredbEndpoints() }

// FlareDBAPIAddr is the host's flaredb API address (host:port on its
// underlay address) when it is a Spec.FlareDB member, else "".
func (h *Host) FlareDBAPIAddr() string {
	if h.c.plan.flaredb == nil {
		return ""
	}
	return h.c.plan.flaredbAddr(h.name, h.c.plan.flaredb.apiPort)
}

// FlareDBRaftAddr is the host's flaredb Raft address when it is a member,
// else "".
func (h *Host) FlareDBRaftAddr() string {
	if h.c.plan.flaredb == nil {
		return ""
	}
	return h.c.plan.flaredbAddr(h.name, h.c.plan.flaredb.raftPort)
}

// SwitchCommand returns a command that runs name inside the switch
// namespace (through `ip netns exec`), which reaches every host on every
// network like a machine plugged into the same switches and is not
// affected by partitions between hosts. It is how a test runs a program
// whose sockets it cannot open through Dial, such as one using the
// flaredb Go client (internal/flaredb/client dials by itself): see
// test/flaredb, which runs its own test binary this way.
func (c *Cluster) SwitchCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.switchNS, name}, args...)...)
}

// FlareDBStatus asks member h for its own view of the cluster (state,
// term, leader, indexes, revision), connecting from the switch namespace.
// It does not follow the leader: a member that is down, stopped or has no
// quorum answers with an error or its stale view.
func (c *Cluster) FlareDBStatus(ctx context.Context, h *Host) (wire.Status, error) {
	addr := h.FlareDBAPIAddr()
	if addr == "" {
		return wire.Status{}, fmt.Errorf("harness: %s is not a flaredb member (Spec.FlareDB)", h.name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tlsCfg, err := pki.ClientConfig(c.FlareDBTLSFiles())
	if err != nil {
		return wire.Status{}, fmt.Errorf("harness: flaredb client TLS: %w", err)
	}
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	// A transport per call: a pooled connection to a member that was
	// killed or frozen since would answer for a process that is gone.
	tr := &http.Transport{
		Protocols:       &protocols,
		TLSClientConfig: tlsCfg,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			return c.Dial(ctx, network, address)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+wire.PathStatus,
		bytes.NewReader(wire.EncodeEmpty(wire.TagStatusRequest)))
	if err != nil {
		return wire.Status{}, err
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, c.FlareDBClusterID())
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return wire.Status{}, fmt.Errorf("harness: flaredb status of %s: %w", h.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxFrameBytes))
	if err != nil {
		return wire.Status{}, fmt.Errorf("harness: flaredb status of %s: %w", h.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		if we, derr := wire.DecodeError(body); derr == nil {
			return wire.Status{}, fmt.Errorf("harness: flaredb status of %s: %w", h.name, we)
		}
		return wire.Status{}, fmt.Errorf("harness: flaredb status of %s: %s", h.name, resp.Status)
	}
	var sr wire.StatusResponse
	if err := sr.Decode(body); err != nil {
		return wire.Status{}, fmt.Errorf("harness: flaredb status of %s: %w", h.name, err)
	}
	return sr.Status, nil
}

// FlareDBLeader returns the member that leads the Spec.FlareDB cluster now:
// one that says it is the leader and that a majority of the members
// (itself included) name as leader in the same term. It fails if there is
// no such member at this moment (see WaitFlareDBLeader).
func (c *Cluster) FlareDBLeader(ctx context.Context) (*Host, error) {
	members := c.FlareDBMembers()
	if len(members) == 0 {
		return nil, fmt.Errorf("harness: the cluster has no Spec.FlareDB")
	}
	type view struct {
		leader string
		term   uint64
	}
	votes := map[view]int{}
	var states []string
	for _, h := range members {
		if !h.State().Alive() {
			states = append(states, h.name+": "+h.State().String())
			continue
		}
		st, err := c.FlareDBStatus(ctx, h)
		if err != nil {
			states = append(states, h.name+": "+err.Error())
			continue
		}
		states = append(states, fmt.Sprintf("%s: %s term %d leader %q", h.name, st.State, st.Term, st.Leader.ID))
		if st.Leader.ID != "" {
			votes[view{st.Leader.ID, st.Term}]++
		}
		if st.State == "Leader" && st.Leader.ID == "" {
			votes[view{st.ID, st.Term}]++
		}
	}
	for v, n := range votes {
		if n > len(members)/2 {
			if h := c.byName[v.leader]; h != nil && h.State().Phase == PhaseRunning {
				return h, nil
			}
		}
	}
	return nil, fmt.Errorf("harness: no flaredb leader agreed by a majority: %s", strings.Join(states, "; "))
}

// WaitFlareDBLeader waits until FlareDBLeader finds a leader.
func (c *Cluster) WaitFlareDBLeader(ctx context.Context, timeout time.Duration) (*Host, error) {
	var leader *Host
	err := WaitFor(ctx, timeout, "a flaredb leader", func(ctx context.Context) (bool, string) {
		h, err := c.FlareDBLeader(ctx)
		if err != nil {
			return false, err.Error()
		}
		leader = h
		return true, ""
	})
	return leader, err
}
