package fsm

import "sync"

// recentLog keeps the newest log entries in memory for watchers. Every
// watcher reads each change right after it is applied; from Pebble that
// took a snapshot, a read of the meta record and an iterator per watcher
// per applied batch, about a tenth of a node's CPU under API load (perf,
// BenchmarkCreateGetAtRate). From here it is a copy of a few entry
// headers. Entries are never changed once added, so readers share them.
//
// The log holds consecutive revisions, bounded by recentLogEntries and
// recentLogBytes (of encoded entries); older ones are read from Pebble as
// before.
type recentLog struct {
	mu    sync.RWMutex
	ring  []LogEntry // capacity recentLogEntries, allocated on first add
	sizes []int      // encoded size of ring[i]
	start int        // index of the oldest entry
	n     int        // entries held
	bytes int        // sum of their sizes
}

const (
	recentLogEntries = 4096
	recentLogBytes   = 16 << 20
)

// add appends e, of encoded size size. A revision that does not follow the
// newest held one (after a restore, say) starts the log afresh, so it
// never has gaps; an entry larger than the whole budget empties it.
func (r *recentLog) add(e LogEntry, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ring == nil {
		r.ring = make([]LogEntry, recentLogEntries)
		r.sizes = make([]int, recentLogEntries)
	}
	if r.n > 0 && r.ring[r.index(r.n-1)].Rev+1 != e.Rev {
		r.clearLocked()
	}
	if size > recentLogBytes {
		r.clearLocked()
		return
	}
	for r.n > 0 && (r.n == len(r.ring) || r.bytes+size > recentLogBytes) {
		r.dropOldestLocked()
	}
	i := r.index(r.n)
	r.ring[i], r.sizes[i] = e, size
	r.n++
	r.bytes += size
}

// read returns the entries from..to (inclusive), at most maxEntries and,
// after the first, no more than maxBytes in all. ok is false when from is
// not held (too old, or not added yet): the caller reads Pebble then.
func (r *recentLog) read(from, to int64, maxEntries, maxBytes int) (entries []LogEntry, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.n == 0 {
		return nil, false
	}
	first := r.ring[r.start].Rev
	last := first + int64(r.n) - 1
	if from < first || from > last {
		return nil, false
	}
	to = min(to, last)
	size := 0
	for rev := from; rev <= to && len(entries) < maxEntries && size < maxBytes; rev++ {
		i := r.index(int(rev - first))
		entries = append(entries, r.ring[i])
		size += r.sizes[i]
	}
	return entries, true
}

// clear forgets every entry.
func (r *recentLog) clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clearLocked()
}

func (r *recentLog) clearLocked() {
	for r.n > 0 {
		r.dropOldestLocked()
	}
	r.start = 0
}

func (r *recentLog) dropOldestLocked() {
	r.bytes -= r.sizes[r.start]
	r.ring[r.start], r.sizes[r.start] = LogEntry{}, 0 // let the entry be collected
	r.start = (r.start + 1) % len(r.ring)
	r.n--
}

// index is the ring position of the k-th held entry (0: oldest).
func (r *recentLog) index(k int) int { return (r.start + k) % len(r.ring) }
