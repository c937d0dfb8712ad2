// Package compactor is the component that keeps the store's change history
// bounded: every interval it discards history older than the newest
// RetainRevisions revisions. Watches can resume from anything newer.
//
// It owns the compaction policy only, never the store's lifetime.
package compactor

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Compactor is the compaction component.
type Compactor struct {
	component.Readiness
	store    storage.Store
	retain   int64
	interval time.Duration
	log      *slog.Logger
}

var _ component.Component = (*Compactor)(nil)

// New returns a compactor for store.
func New(store storage.Store, retain int64, interval time.Duration, log *slog.Logger) *Compactor {
	return &Compactor{store: store, retain: retain, interval: interval, log: log.With("component", "compactor")}
}

// Name implements component.Component.
func (c *Compactor) Name() string { return "store" }

// Run compacts on every tick until ctx ends.
func (c *Compactor) Run(ctx context.Context) error {
	if _, _, err := c.store.Revision(ctx); err != nil {
		return fmt.Errorf("compactor: store not usable: %w", err)
	}
	c.MarkReady()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Once(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("compaction failed", "err", err)
			}
		}
	}
}

// Once compacts history older than the retained window.
func (c *Compactor) Once(ctx context.Context) error {
	cur, compacted, err := c.store.Revision(ctx)
	if err != nil {
		return err
	}
	target := cur - c.retain
	if target <= compacted+1 {
		return nil
	}
	if err := c.store.Compact(ctx, target); err != nil {
		return fmt.Errorf("compactor: compact to %d: %w", target, err)
	}
	c.log.Info("compacted history", "before_revision", target)
	return nil
}
