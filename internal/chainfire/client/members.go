package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// These helpers are thin wrappers over the clientv3 Cluster API for the
// `ultracloud chainfire member` verbs: they check input, resolve names, and
// turn etcd's errors into ones that say what to do.

// Member is one cluster member.
type Member struct {
	// ID is the member ID in hex, as etcdctl shows it.
	ID         string   `json:"id"`
	Name       string   `json:"name"` // empty until an added member starts
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// MemberNameRE matches a member name: 1-63 letters, digits, '.', '_' or
// '-', starting with a letter or digit.
var MemberNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)

// MemberList returns the cluster's members sorted by name (members added
// but not started yet have no name and sort first).
func MemberList(ctx context.Context, c *clientv3.Client) ([]Member, error) {
	resp, err := c.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("chainfire: listing members: %w", err)
	}
	return toMembers(resp.Members), nil
}

func toMembers(in []*etcdserverpb.Member) []Member {
	out := make([]Member, 0, len(in))
	for _, m := range in {
		out = append(out, Member{
			ID:         types.ID(m.ID).String(),
			Name:       m.Name,
			PeerURLs:   slices.Clone(m.PeerURLs),
			ClientURLs: slices.Clone(m.ClientURLs),
			IsLearner:  m.IsLearner,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].ID < out[j].ID
	})
	return out
}

// AddedMember describes a member added to the cluster but not started.
type AddedMember struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
	// InitialCluster is what the new member's config needs as
	// initialCluster, with initialState existing and the cluster's
	// clusterToken.
	InitialCluster []string `json:"initialCluster"`
}

// MemberAdd announces a new member to the cluster. The member must then be
// started with InitialCluster from the result and initialState existing,
// and an empty data directory. With etcd's strict reconfiguration check,
// the add is refused while it would leave the cluster without a quorum of
// started members.
func MemberAdd(ctx context.Context, c *clientv3.Client, name, peerURL string) (AddedMember, error) {
	if !MemberNameRE.MatchString(name) {
		return AddedMember{}, fmt.Errorf("chainfire: member name %q is not valid: use 1-63 letters, digits, '.', '_' or '-'", name)
	}
	u, err := ParseMemberURL(peerURL, false)
	if err != nil {
		return AddedMember{}, fmt.Errorf("chainfire: member %s peer URL: %v", name, err)
	}
	peerURL = u.String()
	existing, err := MemberList(ctx, c)
	if err != nil {
		return AddedMember{}, err
	}
	for _, m := range existing {
		if m.Name == name {
			return AddedMember{}, fmt.Errorf("%w: a member named %q (ID %s) is already in the cluster; remove it first or choose another name", ErrMemberExists, name, m.ID)
		}
		if slices.Contains(m.PeerURLs, peerURL) {
			return AddedMember{}, fmt.Errorf("%w: peer URL %s already belongs to member %q (ID %s)", ErrMemberExists, peerURL, m.Name, m.ID)
		}
	}
	resp, err := c.MemberAdd(ctx, []string{peerURL})
	switch {
	case errors.Is(err, rpctypes.ErrPeerURLExist):
		return AddedMember{}, fmt.Errorf("%w: peer URL %s is already in the cluster", ErrMemberExists, peerURL)
	case errors.Is(err, rpctypes.ErrUnhealthy), errors.Is(err, rpctypes.ErrMemberNotEnoughStarted):
		return AddedMember{}, fmt.Errorf("chainfire: adding member %s: the cluster refused because it would lose its quorum of started members; start the previously added members or remove them first: %w", name, err)
	case err != nil:
		return AddedMember{}, fmt.Errorf("chainfire: adding member %s (%s): %w", name, peerURL, err)
	}
	added := AddedMember{ID: types.ID(resp.Member.ID).String(), Name: name, PeerURL: peerURL}
	for _, m := range resp.Members {
		switch {
		case m.ID == resp.Member.ID:
			added.InitialCluster = append(added.InitialCluster, name+"="+peerURL)
		case m.Name != "":
			for _, pu := range m.PeerURLs {
				added.InitialCluster = append(added.InitialCluster, m.Name+"="+pu)
			}
		}
	}
	slices.Sort(added.InitialCluster)
	return added, nil
}

// MemberRemove removes the member with the given name or hex ID. The
// removed member stops itself; its data directory must not be reused.
func MemberRemove(ctx context.Context, c *clientv3.Client, nameOrID string) error {
	members, err := MemberList(ctx, c)
	if err != nil {
		return err
	}
	var id uint64
	var found []Member
	for _, m := range members {
		if m.Name == nameOrID || m.ID == nameOrID {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		names := make([]string, 0, len(members))
		for _, m := range members {
			names = append(names, m.Name+" ("+m.ID+")")
		}
		return fmt.Errorf("%w: no member named or with ID %q (members: %v)", ErrMemberNotFound, nameOrID, names)
	case 1:
		id, err = strconv.ParseUint(found[0].ID, 16, 64)
		if err != nil {
			return fmt.Errorf("chainfire: member ID %q: %w", found[0].ID, err)
		}
	default:
		return fmt.Errorf("chainfire: %q matches %d members; remove by ID", nameOrID, len(found))
	}
	if _, err := c.MemberRemove(ctx, id); err != nil {
		switch {
		case errors.Is(err, rpctypes.ErrMemberNotFound):
			return fmt.Errorf("%w: member %s was already removed", ErrMemberNotFound, nameOrID)
		case errors.Is(err, rpctypes.ErrUnhealthy), errors.Is(err, rpctypes.ErrMemberNotEnoughStarted):
			return fmt.Errorf("chainfire: removing member %s: the cluster refused because the remaining members would not have a quorum of connected members "+
				"(members must be connected for a few seconds before they count; retry shortly, or bring stopped members back first): %w", nameOrID, err)
		}
		return fmt.Errorf("chainfire: removing member %s: %w", nameOrID, err)
	}
	return nil
}

// ParseMemberURL checks a client or peer URL: http or https, host:port, no
// path. bind additionally requires a host this process can listen on (an IP
// address or localhost, not the unspecified address).
func ParseMemberURL(raw string, bind bool) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("must not be empty (e.g. https://10.0.0.1:2379)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q must start with https:// (or http:// on loopback)", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q must be scheme://host:port with nothing else", raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return nil, fmt.Errorf("%q needs host:port (e.g. %s://10.0.0.1:2379)", raw, u.Scheme)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("%q: port %q is not a number from 1 to 65535", raw, port)
	}
	if bind {
		ip := net.ParseIP(host)
		if host != "localhost" && ip == nil {
			return nil, fmt.Errorf("%q: host %q must be an IP address or localhost (the member listens on it)", raw, host)
		}
		if ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("%q: host %s is the unspecified address, but the URL is also advertised to others; use this node's address", raw, host)
		}
	}
	u.Path = ""
	return u, nil
}
