package prismnet

import (
	"net/http"
	"net/netip"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// Store keys outside the resource tree. They make IPAM and the "still in
// use" checks transactional: every key is written and removed in the same
// transaction as the object it belongs to, and deletes check the ranges of
// their dependants with storage.CompareRangeEmpty.
const (
	// vniPrefix + VNI (decimal) -> "project/network": VNIs are unique.
	vniPrefix = "/prismnet/vni/"
	// addrPrefix + project/subnet/address -> owner ("port/NAME",
	// "router/NAME"): an address is handed out once.
	addrPrefix = "/prismnet/addr/"
	// extAddrPrefix + external network/address -> owner
	// ("project/router/NAME", "project/fip/NAME").
	extAddrPrefix = "/prismnet/extaddr/"
	// netPortPrefix + project/network/port: the network's ports.
	netPortPrefix = "/prismnet/netports/"
	// netSubnetPrefix + project/network/subnet -> CIDR: the network's
	// subnets, read for the overlap check.
	netSubnetPrefix = "/prismnet/netsubnets/"
	// subnetGenPrefix + project/network: bumped by every subnet create so
	// two concurrent creates cannot both pass the overlap check.
	subnetGenPrefix = "/prismnet/subnetgen/"
	// macPrefix + project/network/mac -> port: a MAC once per network.
	macPrefix = "/prismnet/mac/"
	// groupPortPrefix + project/group/port: the ports of a security group.
	groupPortPrefix = "/prismnet/groupports/"
	// subnetRouterPrefix + project/subnet/router: routers attached to a
	// subnet.
	subnetRouterPrefix = "/prismnet/subnetrouters/"
)

func key(prefix string, parts ...string) []byte {
	b := []byte(prefix)
	for i, p := range parts {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, p...)
	}
	return b
}

// dir is key(prefix, parts...) + "/", the prefix of a key range.
func dir(prefix string, parts ...string) []byte { return append(key(prefix, parts...), '/') }

func addrKey(project, subnet string, a netip.Addr) []byte {
	return key(addrPrefix, project, subnet, a.String())
}

func put(k []byte, v string) storage.Op {
	return storage.Op{Type: storage.OpPut, Key: k, Value: []byte(v)}
}

func del(k []byte) storage.Op { return storage.Op{Type: storage.OpDelete, Key: k} }

// emptyRange requires that no key starts with prefix, else err.
func emptyRange(prefix []byte, err error) apiserver.Precondition {
	return apiserver.Precondition{
		Compare: storage.Compare{Key: prefix, RangeEnd: storage.PrefixEnd(prefix), Target: storage.CompareRangeEmpty},
		Err:     err,
	}
}

// exists requires an object of coll to exist, else a 404 naming it.
func exists(coll, project, name, singular string) apiserver.Precondition {
	return apiserver.Precondition{
		Compare: storage.Compare{Key: apiserver.ObjectKey(coll, project, name), Target: storage.CompareExists},
		Err:     notFound(singular, project, name),
	}
}

// projectExists requires the project to exist (as iam's objects do).
func projectExists(project string) apiserver.Precondition {
	return apiserver.Precondition{
		Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.ProjectCollection, "", project), Target: storage.CompareExists},
		Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", project),
	}
}

// free requires k to be missing, else err; retry says whether k was picked
// from a view that may be stale (then the create tries another).
func free(k []byte, retry bool, err error) apiserver.Precondition {
	return apiserver.Precondition{Compare: storage.Compare{Key: k, Target: storage.CompareMissing}, Retry: retry, Err: err}
}

func notFound(singular, project, name string) error {
	if project == "" {
		return apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "%s %q not found", singular, name)
	}
	return apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "%s %q not found in project %q", singular, name, project)
}

func inUse(format string, args ...any) error {
	return apiserver.Errorf(http.StatusConflict, prismnetv1.CodeInUse, format, args...)
}
