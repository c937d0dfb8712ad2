package iam

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// Benchmarks of the security path every API call takes. Run:
//
//	go test ./internal/iam -run '^$' -bench . -benchtime 2s
//
// Figures are in docs/iam.md.

// BenchmarkVerifyToken: ES256 access token verification, with the
// signature checked every time (uncached) and as a client reusing its
// token sees it (cached).
func BenchmarkVerifyToken(b *testing.B) {
	e := newTestEnv(b)
	e.user("alice", "alice-password-1")
	_, tr := e.login("alice", "alice-password-1")
	for _, cache := range []struct {
		name string
		size int
	}{{"uncached", -1}, {"cached", 0}} {
		b.Run(cache.name, func(b *testing.B) {
			v := apiserver.NewJWTVerifier(e.iam.keys, apiserver.JWTOptions{Issuer: e.iam.cfg.issuer, Audience: iamv1.DefaultAudience,
				Now: e.clock.Now, CacheSize: cache.size})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := v.Verify(ctx, tr.AccessToken); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// policyWorld fills a policy with 1000 users, 200 projects and 2000
// project bindings plus 10 cluster bindings, directly in the store.
func policyWorld(b *testing.B) *testEnv {
	e := newTestEnv(b)
	ctx := context.Background()
	for i := range 200 {
		e.create(iamv1.ProjectCollection, "", fmt.Sprintf("p%03d", i), iamv1.ProjectSpec{})
	}
	for i := range 2000 {
		e.create(iamv1.RoleBindingCollection, fmt.Sprintf("p%03d", i%200), fmt.Sprintf("b%04d", i),
			iamv1.RoleBindingSpec{Role: []string{"admin", "member", "viewer"}[i%3], Principal: fmt.Sprintf("user:u%03d", i%1000)})
	}
	for i := range 10 {
		e.create(iamv1.ClusterRoleBindingCollection, "", fmt.Sprintf("c%02d", i), iamv1.RoleBindingSpec{Role: "viewer", Principal: fmt.Sprintf("user:ops%d", i)})
	}
	rev, _, _ := e.store.Revision(ctx)
	e.iam.policy.WaitFor(ctx, iamv1.RoleBindingCollection, rev-10, 10*time.Second)
	return e
}

// BenchmarkAuthorize: decisions from the cache (the steady state: the same
// principals keep asking the same questions), computed without it, and
// cached under parallel load. Reports p50 and p99 per decision.
func BenchmarkAuthorize(b *testing.B) {
	e := policyWorld(b)
	pol := e.iam.policy
	ctx := context.Background()
	// 256 distinct (principal, permission, project) questions.
	type q struct {
		p  apiserver.Principal
		at apiserver.Attributes
	}
	var qs []q
	for i := range 256 {
		qs = append(qs, q{apiserver.Principal{Name: fmt.Sprintf("user:u%03d", i*3%1000)},
			apiserver.Attributes{Component: "compute", Collection: "vms", Verb: []string{"get", "list", "create", "delete"}[i%4],
				Project: fmt.Sprintf("p%03d", i%200)}})
	}
	for _, x := range qs {
		pol.Authorize(ctx, x.p, x.at) // warm
	}
	latencies := func(b *testing.B, f func(i int)) {
		lat := make([]time.Duration, 0, 1<<20)
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			t0 := time.Now()
			f(i)
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(t0))
			}
			i++
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}
	b.Run("cached", func(b *testing.B) {
		latencies(b, func(i int) { pol.Authorize(ctx, qs[i%len(qs)].p, qs[i%len(qs)].at) })
	})
	b.Run("uncached", func(b *testing.B) {
		s := pol.snap.Load()
		latencies(b, func(i int) {
			x := qs[i%len(qs)]
			pol.evaluate(s, x.p.Name, x.at.Component, x.at.Collection, x.at.Verb, x.at.Project)
		})
	})
	b.Run("cached-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				x := qs[i%len(qs)]
				pol.Authorize(ctx, x.p, x.at)
				i++
			}
		})
	})
}

// BenchmarkMiddleware: one GET of a widget through the API handler (no
// network), without authentication, with the break-glass token (no
// authorization), and with an access token (verification, revocation
// check and authorization). The difference is what the security path adds
// to an API call.
func BenchmarkMiddleware(b *testing.B) {
	e := newTestEnv(b)
	e.create(iamv1.ProjectCollection, "", "p", iamv1.ProjectSpec{})
	e.create("widgets", "p", "w", widgetSpec{Size: 1})
	e.user("alice", "alice-password-1")
	e.bind("alice", "member", "user:alice", "p")
	_, tr := e.login("alice", "alice-password-1")
	// The same store and kind served without any authentication.
	open := apiserver.New(e.store, apiserver.Options{})
	if err := apiserver.Register(open, "test", apiserver.KindDef[widgetSpec, widgetStatus]{
		Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject}); err != nil {
		b.Fatal(err)
	}
	openMux := http.NewServeMux()
	open.Mount(openMux)
	type variant struct {
		name, token string
		mux         http.Handler
	}
	variants := []variant{
		{"none", "", openMux},
		{"bootstrap-token", bootstrapToken, e.routes},
		{"jwt+authz", tr.AccessToken, e.routes},
	}
	serve := func(b *testing.B, v variant) {
		req := httptest.NewRequest("GET", "/v1/projects/p/widgets/w", nil)
		if v.token != "" {
			req.Header.Set("Authorization", "Bearer "+v.token)
		}
		rec := httptest.NewRecorder()
		v.mux.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serve(b, v)
			}
		})
	}
	// The three interleaved in one loop, so load from elsewhere on the
	// machine hits all alike; reports each one's mean and the overheads.
	b.Run("interleaved", func(b *testing.B) {
		sums := make([]time.Duration, len(variants))
		for b.Loop() {
			for i, v := range variants {
				t0 := time.Now()
				serve(b, v)
				sums[i] += time.Since(t0)
			}
		}
		n := float64(b.N)
		none := float64(sums[0].Nanoseconds()) / n
		b.ReportMetric(none, "none-ns")
		b.ReportMetric(float64(sums[1].Nanoseconds())/n-none, "bootstrap-overhead-ns")
		b.ReportMetric(float64(sums[2].Nanoseconds())/n-none, "jwt+authz-overhead-ns")
	})
	// Just the security path: authenticate (cached verification plus the
	// revocation check) and authorize, as the handler runs them.
	b.Run("auth-path-only", func(b *testing.B) {
		req := httptest.NewRequest("GET", "/v1/projects/p/widgets/w", nil)
		req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
		at := apiserver.Attributes{Component: "test", Collection: "widgets", Verb: "get", Project: "p", Name: "w"}
		b.ReportAllocs()
		for b.Loop() {
			p, err := e.iam.Authenticate(req)
			if err != nil {
				b.Fatal(err)
			}
			if e.iam.policy.Authorize(req.Context(), p, at) != apiserver.Allow {
				b.Fatal("denied")
			}
		}
	})
}
