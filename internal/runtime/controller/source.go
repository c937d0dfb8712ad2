package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// ErrCompacted says that the history a watch was asked to start from is gone.
// Sources return an error wrapping it (from Watch, or from Stream.Err) so the
// controller lists again instead of retrying the same revision.
var ErrCompacted = errors.New("controller: revision compacted")

// Source is one collection a controller follows.
type Source interface {
	// List returns every item and the revision the list was read at.
	List(ctx context.Context) (items []api.Object, revision int64, err error)
	// Watch streams every change after revision since. If that history is
	// gone it fails with an error wrapping ErrCompacted.
	Watch(ctx context.Context, since int64) (Stream, error)
}

// Stream is a running watch. *client.Watch satisfies it.
type Stream interface {
	// Events delivers changes in revision order and BOOKMARK events saying
	// how far the stream has got. It is closed when the watch ends.
	Events() <-chan api.Event
	// Err says why the watch ended once Events is closed: nil if it was
	// stopped or its context ended, an error wrapping ErrCompacted if the
	// history is gone, another error otherwise.
	Err() error
	// Stop ends the watch and waits for it to finish.
	Stop()
}

// FromClient adapts a collection of the Go SDK. labelSelector may be empty.
// For project-scoped kinds, pass a Resources for project "" to follow every
// project.
func FromClient(r *client.Resources, labelSelector string) Source {
	return &clientSource{r: r, selector: labelSelector}
}

type clientSource struct {
	r        *client.Resources
	selector string
}

func (s *clientSource) List(ctx context.Context) ([]api.Object, int64, error) {
	items, rev, err := s.r.ListAll(ctx, client.ListOptions{LabelSelector: s.selector})
	if err != nil {
		return nil, 0, fmt.Errorf("controller: list: %w", err)
	}
	return items, rev, nil
}

func (s *clientSource) Watch(ctx context.Context, since int64) (Stream, error) {
	w, err := s.r.Watch(ctx, client.WatchOptions{LabelSelector: s.selector, Since: &since})
	if err != nil {
		return nil, fmt.Errorf("controller: watch since revision %d: %w", since, compactedErr(err))
	}
	return clientStream{w}, nil
}

// clientStream marks the SDK's compaction problem with ErrCompacted.
type clientStream struct{ *client.Watch }

func (s clientStream) Err() error {
	err := s.Watch.Err()
	if err == nil {
		return nil
	}
	return fmt.Errorf("controller: watch: %w", compactedErr(err))
}

func compactedErr(err error) error {
	if client.IsCompacted(err) {
		return fmt.Errorf("%w: %w", ErrCompacted, err)
	}
	return err
}

// isCompacted accepts both our sentinel and the SDK's problem code, so
// Sources that do not wrap ErrCompacted still trigger a relist.
func isCompacted(err error) bool {
	return errors.Is(err, ErrCompacted) || client.IsCompacted(err)
}
