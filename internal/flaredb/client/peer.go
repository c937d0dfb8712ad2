package client

// The single-node addresses: where a member listens unless configured
// otherwise (`ultracloud up` runs one there), and so where the operator CLI
// looks for one by default.
const (
	DefaultRaftAddress = "127.0.0.1:7710"
	DefaultAPIAddress  = "127.0.0.1:7711"
)

// Peer is one member of a cluster as a member's initialVoters (and a
// restore's voters) name it.
type Peer struct {
	// ID is the member's ID.
	ID string `yaml:"id"`
	// RaftAddress is where its Raft transport is reached (its RaftAdvertise).
	RaftAddress string `yaml:"raftAddress"`
	// APIAddress is where its API is reached (its APIAdvertise).
	APIAddress string `yaml:"apiAddress"`
}
