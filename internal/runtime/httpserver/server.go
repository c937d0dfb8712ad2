// Package httpserver is the node's one API listener as a component: it serves
// the mux that components mounted their routes on, wraps every request with
// request IDs, access logs, panic recovery and Prometheus metrics, and serves
// /healthz, /readyz and /metrics itself.
//
// It owns the listener and cross-cutting HTTP concerns; it knows no resource
// or component semantics (readiness comes from a function it is given).
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/logging"
)

// Config of the listener.
type Config struct {
	// Addr is host:port to listen on (port 0 picks a free port).
	Addr string
	// ShutdownGrace bounds how long in-flight requests may take to finish.
	ShutdownGrace time.Duration
}

// Mux is the router the server serves and adds its own routes to;
// *http.ServeMux is one (tests wrap it to record every pattern).
type Mux interface {
	http.Handler
	Handle(pattern string, handler http.Handler)
}

// Server is the HTTP listener component.
type Server struct {
	component.Readiness
	cfg      Config
	mux      Mux
	log      *slog.Logger
	registry *prometheus.Registry
	ready    func() error
	onStop   []func()

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	addr chan string // receives the bound address once listening
}

var _ component.Component = (*Server)(nil)

// New returns a server for mux. ready reports whether the node is ready (nil
// error) for /readyz. registry receives the HTTP metrics and is served at
// /metrics. onStop functions run when shutdown begins (e.g. to end watch
// streams so shutdown does not wait for them).
func New(cfg Config, mux Mux, log *slog.Logger, registry *prometheus.Registry, ready func() error, onStop ...func()) *Server {
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	s := &Server{cfg: cfg, mux: mux, log: log.With("component", "http"), registry: registry, ready: ready, onStop: onStop,
		addr: make(chan string, 1)}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ultracloud_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ultracloud_http_request_duration_seconds", Help: "HTTP request latency by route pattern and method.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "method"})
	s.inflight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ultracloud_http_requests_in_flight", Help: "HTTP requests being served."})
	return s
}

// Name implements component.Component.
func (s *Server) Name() string { return "http" }

// Addr returns the bound address once the server listens.
func (s *Server) Addr(ctx context.Context) (string, error) {
	select {
	case a := <-s.addr:
		s.addr <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Run listens and serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	for _, c := range []prometheus.Collector{s.requests, s.duration, s.inflight} {
		if err := s.registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return fmt.Errorf("httpserver: registering metrics: %w", err)
			}
		}
	}
	s.mux.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	}))
	s.mux.Handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if err := s.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))

	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("httpserver: listen on %s: %w (is another ultracloud running? pick another address with --listen)", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.wrap(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second, // watch streams extend their own deadlines
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	for _, f := range s.onStop {
		srv.RegisterOnShutdown(f)
	}
	s.addr <- ln.Addr().String()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String())
	s.MarkReady()

	select {
	case err := <-errc:
		return fmt.Errorf("httpserver: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("httpserver: requests still running after %s: %w", s.cfg.ShutdownGrace, err)
	}
	return nil
}

// statusWriter records the status code; it passes Flush and deadlines on
// through Unwrap so streaming handlers keep working.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap adds request IDs, recovery, metrics and access logs.
func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if id == "" || len(id) > 64 {
			id = logging.NewRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		r = r.WithContext(logging.WithRequestID(r.Context(), id))
		sw := &statusWriter{ResponseWriter: w}
		s.inflight.Inc()
		defer func() {
			s.inflight.Dec()
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.ErrorContext(r.Context(), "handler panicked", "path", r.URL.Path, "panic", fmt.Sprint(p))
				if sw.code == 0 {
					http.Error(sw, "internal error", http.StatusInternalServerError)
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			elapsed := time.Since(start)
			s.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
			s.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				s.log.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "code", code, "duration", elapsed)
			}
		}()
		h.ServeHTTP(sw, r)
	})
}

// Report implements component.Reporter: the API's base URL, the metrics
// endpoint and the API's OpenAPI document (mounted by the API on this
// listener's mux).
func (s *Server) Report(ctx context.Context) component.Report {
	addr, err := s.Addr(ctx)
	if err != nil {
		return component.Report{}
	}
	url := "http://" + addr
	return component.Report{Endpoints: map[string]string{"api": url, "metrics": url + "/metrics", "openapi": url + "/openapi.json"}}
}

// RecordingMux is an http.ServeMux that remembers every pattern mounted on
// it (a ServeMux cannot list them), so a test can check that every route
// the listener serves is documented in /openapi.json.
type RecordingMux struct {
	mux      *http.ServeMux
	mu       sync.Mutex
	patterns []string
}

// NewRecordingMux returns an empty RecordingMux.
func NewRecordingMux() *RecordingMux { return &RecordingMux{mux: http.NewServeMux()} }

// Handle registers h for pattern and remembers the pattern.
func (m *RecordingMux) Handle(pattern string, h http.Handler) {
	m.mu.Lock()
	m.patterns = append(m.patterns, pattern)
	m.mu.Unlock()
	m.mux.Handle(pattern, h)
}

// ServeHTTP dispatches to the registered handlers.
func (m *RecordingMux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Patterns returns every pattern registered so far, in order.
func (m *RecordingMux) Patterns() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.patterns)
}
