package prismnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
	"github.com/ultracloud/ultracloud/internal/prismnet/dhcp"
	"github.com/ultracloud/ultracloud/internal/prismnet/metadata"
	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
	"github.com/ultracloud/ultracloud/internal/prismnet/ra"
)

// services runs the addressing services of every network present on the
// host, inside the network's service namespace: a DHCPv4 server answering
// the host's own ports, an RA sender for IPv6 subnets, and the metadata
// proxy on 169.254.169.254:80 (forwarding to the API's metadata service
// with the identity of the port a request comes from). They start when
// a network appears, get new tables when ports change, and stop when it
// goes; a restart of the agent starts them again, so a workload renewing
// meanwhile just retries.
type services struct {
	host *dataplane.Host
	log  *slog.Logger
	// upstream is where the metadata proxies forward (the API's metadata
	// service), with transport carrying the agent's credentials.
	upstream  *url.URL
	transport http.RoundTripper

	mu  sync.Mutex
	run map[string]*netServices // network ID -> running services
	wg  sync.WaitGroup
}

type netServices struct {
	cancel    context.CancelFunc
	dhcp      *dhcp.Server
	ra        *ra.Sender
	view      serviceView
	instances atomic.Pointer[map[netip.Addr]metadata.Instance]
}

func newServices(host *dataplane.Host, log *slog.Logger, upstream *url.URL, transport http.RoundTripper) *services {
	return &services{host: host, log: log, upstream: upstream, transport: transport, run: map[string]*netServices{}}
}

// sync makes the running services match want (network ID -> what to
// announce).
func (s *services) sync(ctx context.Context, want map[string]serviceView) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, ns := range s.run {
		if w, ok := want[id]; !ok || w.dhcpServerID != ns.view.dhcpServerID || (len(w.ra) > 0) != (ns.ra != nil) {
			ns.cancel() // gone, or its shape changed: start it afresh below
			delete(s.run, id)
		}
	}
	for id, w := range want {
		ns, ok := s.run[id]
		if !ok {
			var err error
			if ns, err = s.start(ctx, id, w); err != nil {
				errs = append(errs, fmt.Errorf("network %s services: %w", id, err))
				continue
			}
			s.run[id] = ns
		}
		if ns.dhcp != nil && !sameLeases(ns.view.leases, w.leases) {
			if err := ns.dhcp.SetLeases(w.leases); err != nil {
				errs = append(errs, fmt.Errorf("network %s DHCP leases: %w", id, err))
			}
		}
		if ns.ra != nil && (!slices.Equal(ns.view.ra, w.ra) || ns.view.mtu != w.mtu) {
			if err := ns.ra.Set(ra.Config{Prefixes: w.ra, MTU: w.mtu, DNS: w.dns}); err != nil {
				errs = append(errs, fmt.Errorf("network %s RA: %w", id, err))
			}
		}
		inst := w.instances
		ns.instances.Store(&inst)
		ns.view = w
	}
	return errors.Join(errs...)
}

// start launches a network's services in its service namespace.
func (s *services) start(ctx context.Context, id string, w serviceView) (*netServices, error) {
	path, err := s.host.ServiceNamespace(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ns := &netServices{cancel: cancel}
	log := s.log.With("network", id)
	if w.dhcpServerID.IsValid() {
		srv, err := dhcp.New(dhcp.Config{ServerID: w.dhcpServerID, Logger: log,
			Open: func() (pc net.PacketConn, err error) {
				err = netns.Do(path, func() error {
					var lerr error
					pc, lerr = dhcp.Listen(dataplane.ServiceInterface)
					return lerr
				})
				return pc, err
			}})
		if err != nil {
			cancel()
			return nil, err
		}
		if err := srv.SetLeases(w.leases); err != nil {
			cancel()
			return nil, err
		}
		ns.dhcp = srv
		s.wg.Go(func() {
			if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("prismnet-agent: DHCP server stopped", "err", err)
			}
		})
	}
	if s.upstream != nil {
		inst := w.instances
		ns.instances.Store(&inst)
		px, err := metadata.New(metadata.Options{Network: id, Upstream: s.upstream, Transport: s.transport, Logger: log,
			Lookup: func(a netip.Addr) (metadata.Instance, bool) {
				i, ok := (*ns.instances.Load())[a]
				return i, ok
			},
			Listen: func() (l net.Listener, err error) {
				err = netns.Do(path, func() error {
					var lerr error
					l, lerr = net.Listen("tcp", net.JoinHostPort(metadataAddr.String(), "80"))
					return lerr
				})
				return l, err
			}})
		if err != nil {
			cancel()
			return nil, err
		}
		s.wg.Go(func() {
			if err := px.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("prismnet-agent: metadata proxy stopped", "err", err)
			}
		})
	}
	if len(w.ra) > 0 {
		snd, err := ra.New(ra.Options{Logger: log, Open: func() (c ra.Conn, mac net.HardwareAddr, err error) {
			err = netns.Do(path, func() error {
				var lerr error
				c, mac, lerr = ra.Listen(dataplane.ServiceInterface)
				return lerr
			})
			return c, mac, err
		}})
		if err != nil {
			cancel()
			return nil, err
		}
		if err := snd.Set(ra.Config{Prefixes: w.ra, MTU: w.mtu, DNS: w.dns}); err != nil {
			cancel()
			return nil, err
		}
		ns.ra = snd
		s.wg.Go(func() {
			if err := snd.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("prismnet-agent: RA sender stopped", "err", err)
			}
		})
	}
	return ns, nil
}

// stopAll stops every service and waits for them.
func (s *services) stopAll() {
	s.mu.Lock()
	for id, ns := range s.run {
		ns.cancel()
		delete(s.run, id)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func sameLeases(a, b []dhcp.Lease) bool {
	return slices.EqualFunc(a, b, func(x, y dhcp.Lease) bool { return reflect.DeepEqual(x, y) })
}
