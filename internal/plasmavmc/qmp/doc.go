// Package qmp is a client of the QEMU Machine Protocol: one connection to
// one QEMU's monitor socket, commands with per-command timeouts, and the
// asynchronous events QEMU sends between replies.
//
// It owns the wire conversation: reading the greeting, negotiating
// capabilities (none are enabled; out-of-band execution is not used),
// numbering requests, matching replies to requests by id (QEMU answers in
// order today, but nothing here depends on it), turning QEMU's error
// replies into *Error values (class and description), and fanning events
// out to subscribers.
//
// Design choices, and why:
//   - Replies are never held up by events. One reader goroutine decodes the
//     stream; a reply goes to the command waiting for its id (a buffered
//     channel of one, so the reader never blocks on it), an event goes to
//     every subscription without blocking: each subscription has its own
//     bounded buffer and, when it is full, drops its OLDEST event (counting
//     the drop) to make room for the new one. A slow or absent event reader
//     therefore loses old events, never replies, and never slows another
//     subscriber. Subscribe with a name filter for the events that must not
//     be crowded out (the qemu package watches SHUTDOWN that way).
//   - No size cap on a message: the stream is decoded with encoding/json's
//     streaming decoder, so a reply of many megabytes (query-qmp-schema is
//     about 200 KiB) is read whole.
//   - A command's context bounds both the write and the wait. A command that
//     times out is forgotten; its late reply, when it comes, matches no
//     waiting command and is discarded. QEMU runs commands one after
//     another, so a command hung inside QEMU delays the ones behind it: they
//     time out too, and the connection stays usable once QEMU recovers.
//   - The connection ending (QEMU exiting, the socket closing, a protocol
//     error, Close) fails every waiting command, closes every subscription
//     channel and closes Done; Err says why.
//
// What it must not do: start, stop or signal QEMU processes (package qemu
// does), interpret command replies beyond the protocol envelope, or retry a
// command (a retried system_reset or quit is not harmless).
package qmp
