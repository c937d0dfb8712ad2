// Package wire is flaredb's network protocol: the request and response
// messages, their compact binary encoding, the watch stream framing, the
// namespace rules, and the table that maps error codes to sentinel errors.
//
// It owns the byte format and its validation. Every decoder is strict: it
// rejects unknown versions and message tags, out-of-range enums, lengths
// beyond the limits (checked before allocating), and trailing bytes, and it
// never panics on malformed input (FuzzDecode checks this). The server and the
// client both use it, so they cannot disagree on the format.
//
// It must not: do I/O, know about Raft, Pebble or HTTP handlers, or hold any
// state. Decoded byte slices alias the input buffer; callers that keep them
// past the buffer's life copy them.
//
// # Format
//
// A message body is: version byte (Version), message tag byte, then the
// message's fields in a fixed order. Integers are unsigned or zig-zag
// varints; byte strings and strings are a uvarint length then the bytes;
// lists are a uvarint count then the elements; booleans and enums one byte.
//
// # Versions
//
// Version is the single protocol version number. Changelog:
//
//   - 1 (2026-11-26): first version: get, range, txn (with TTL), watch,
//     revision, compact, read index, status, members, leader transfer,
//     snapshot.
//   - 1 (2026-12-04): compare target 4, range empty (storage.CompareRangeEmpty),
//     its range end in the compare's value field; error code 29, invalid
//     range. An addition within version 1: a member that predates it
//     refuses such a compare as invalid (unknown target), so a cluster must
//     run it on every member before clients use range compares (a Raft log
//     entry holding one fails to apply on an older member).
package wire
