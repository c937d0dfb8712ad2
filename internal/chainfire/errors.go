package chainfire

import (
	"errors"

	"github.com/ultracloud/ultracloud/internal/chainfire/client"
)

// Sentinel errors. Callers match them with errors.Is; the messages wrapping
// them carry the details.
var (
	// ErrInvalidConfig wraps every configuration error from Validate.
	ErrInvalidConfig = errors.New("chainfire: invalid config")
	// ErrWrongCluster: the data directory belongs to another cluster or
	// member than the configuration describes.
	ErrWrongCluster = errors.New("chainfire: data directory belongs to another cluster")
	// ErrNotRunning: the member is not (or no longer) serving.
	ErrNotRunning = errors.New("chainfire: member not running")
	// ErrStartTimeout: the member did not become ready within StartTimeout.
	ErrStartTimeout = errors.New("chainfire: member did not start in time")
	// ErrStopped: etcd stopped the member while it was running (for
	// example because it was removed from the cluster).
	ErrStopped = errors.New("chainfire: member stopped unexpectedly")
	// ErrSnapshot: a snapshot could not be saved or restored (the same
	// error as the client's, which saves them).
	ErrSnapshot = client.ErrSnapshot
)
