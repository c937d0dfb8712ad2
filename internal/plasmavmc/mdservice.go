package plasmavmc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ultracloud/ultracloud/internal/plasmavmc/metadata"
	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// MetadataPath is where the API serves instance metadata: the prismnet
// agents' proxies forward a guest's 169.254.169.254 requests here with
// headers naming the port the request came from.
const MetadataPath = "/metadata"

// Identity headers the prismnet metadata proxy sets (and strips from what
// guests send).
const (
	hdrProject = "X-UltraCloud-Project"
	hdrPort    = "X-UltraCloud-Port"
)

// metadataService answers cloud-init's EC2 and OpenStack paths for the VM
// that owns the asking port. It believes the identity headers only from a
// host's prismnet agent (a node principal, or this node's own agent's
// system principal) and only for a port bound to that host: a worker can
// ask for the metadata of the VMs it runs, and nothing else.
type metadataService struct {
	store  storage.Store
	node   string // this node, whose own agent is system:prismnet-agent
	server *metadata.Server
}

func newMetadataService(st storage.Store, node string) (*metadataService, error) {
	m := &metadataService{store: st, node: node}
	srv, err := metadata.New(metadata.Config{Lookup: m.lookup})
	if err != nil {
		return nil, err
	}
	m.server = srv
	return m, nil
}

func (m *metadataService) register(a *apiserver.API) error {
	serve := apiserver.Stream("text/plain", func(c *apiserver.Call, w http.ResponseWriter) error {
		p := c.Principal
		host := p.Node
		if host == "" && p.Name == "system:prismnet-agent" {
			host = m.node
		}
		if host == "" {
			return apiserver.Errorf(http.StatusForbidden, api.CodeForbidden,
				"%s may not ask for instance metadata: only a host's prismnet agent does, for the VMs on its host", p.Name)
		}
		r := c.Request.Clone(context.WithValue(c.Context(), hostKey{}, host))
		r.URL.Path = "/" + c.Request.PathValue("path")
		r.URL.RawPath = ""
		m.server.ServeHTTP(w, r)
		return nil
	})
	for _, e := range []apiserver.Endpoint{
		{Method: http.MethodGet, Path: MetadataPath + "/{path...}", OperationID: "getInstanceMetadata",
			Summary: "cloud-init metadata (EC2 and OpenStack paths) of the VM whose port the prismnet proxy names",
			Access:  apiserver.AccessAuthenticated, Handler: serve},
		{Method: http.MethodPut, Path: MetadataPath + "/{path...}", OperationID: "putInstanceMetadataToken",
			Summary: "an IMDSv2 session token (latest/api/token)", Access: apiserver.AccessAuthenticated, Handler: serve},
	} {
		if err := a.Handle("plasmavmc", e); err != nil {
			return err
		}
	}
	return nil
}

type hostKey struct{}

// lookup finds the VM owning the port the proxy named, checking that the
// port is bound to the asking host.
func (m *metadataService) lookup(r *http.Request) (*metadata.Instance, error) {
	ctx := r.Context()
	host, _ := ctx.Value(hostKey{}).(string)
	project, portName := r.Header.Get(hdrProject), r.Header.Get(hdrPort)
	if apiserver.ValidateName("project", project) != nil || apiserver.ValidateName("port", portName) != nil {
		return nil, fmt.Errorf("%w: the request names no port", metadata.ErrNoInstance)
	}
	pspec, pst, err := getObj[prismnetv1.PortSpec, prismnetv1.PortStatus](ctx, m.store, prismnetv1.PortCollection, project, portName)
	if err != nil {
		return nil, err
	}
	if pspec.Binding.Host != host {
		return nil, fmt.Errorf("%w: port %s/%s is not bound to %s", metadata.ErrNoInstance, project, portName, host)
	}
	if pspec.Owner == nil || pspec.Owner.Kind != plasmavmcv1.VMKind {
		return nil, fmt.Errorf("%w: port %s/%s belongs to no VM", metadata.ErrNoInstance, project, portName)
	}
	vmObj, err := getRaw(ctx, m.store, plasmavmcv1.VMCollection, project, pspec.Owner.Name)
	if err != nil {
		return nil, err
	}
	spec, st, err := decodeObj[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](vmObj)
	if err != nil {
		return nil, err
	}
	if st.Host != host {
		return nil, fmt.Errorf("%w: VM %s/%s does not run on %s", metadata.ErrNoInstance, project, vmObj.Metadata.Name, host)
	}
	inst := &metadata.Instance{ID: vmObj.Metadata.UID, UUID: vmObj.Metadata.UID, Name: vmObj.Metadata.Name,
		Hostname: vmObj.Metadata.Name, Project: project, InstanceType: fmt.Sprintf("%dc-%dm", spec.VCPUs, spec.MemoryMiB)}
	if spec.UserData != "" {
		inst.UserData = []byte(spec.UserData)
	}
	for i, k := range spec.SSHKeys {
		inst.SSHKeys = append(inst.SSHKeys, metadata.SSHKey{Name: fmt.Sprintf("key-%d", i), Key: k})
	}
	// NICs by DHCP, matched by MAC: the asking port, and the VM's others.
	for i, nic := range spec.NICs {
		name := nic.Port
		if name == "" {
			name = nicPortName(vmObj.Metadata.Name, i)
		}
		mac := ""
		if name == portName {
			mac = pst.MAC
		} else if _, other, err := getObj[prismnetv1.PortSpec, prismnetv1.PortStatus](ctx, m.store, prismnetv1.PortCollection, project, name); err == nil {
			mac = other.MAC
		}
		if mac != "" {
			inst.NICs = append(inst.NICs, metadata.NIC{ID: name, Network: nic.Network, MAC: mac})
		}
	}
	return inst, nil
}

func getRaw(ctx context.Context, st storage.Store, coll, project, name string) (*api.Object, error) {
	kv, err := st.Get(ctx, apiserver.ObjectKey(coll, project, name))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s %s/%s not found", metadata.ErrNoInstance, strings.TrimSuffix(coll, "s"), project, name)
	}
	if err != nil {
		return nil, err
	}
	return apiserver.ObjectFromKV(kv)
}

func getObj[S, T any](ctx context.Context, st storage.Store, coll, project, name string) (*S, *T, error) {
	o, err := getRaw(ctx, st, coll, project, name)
	if err != nil {
		return nil, nil, err
	}
	return decodeObj[S, T](o)
}
