package config

// Flag is a config field that daemon commands (`up`, `server`) also accept
// as a command-line flag. Sections offer theirs by implementing Flagger;
// the node prefixes their fields with the section's name.
type Flag struct {
	// Name is the flag without dashes ("chainfire-client-url").
	Name string
	// Field is the dotted field path it sets, relative to its section.
	Field string
	// Usage says what it is, in a few words.
	Usage string
	// Listener, for a listen address, is its form with the port left as
	// %d ("http://127.0.0.1:%d"), so tests can give every listener of a
	// node a free port without knowing the components.
	Listener string
}

// Flagger is implemented by sections that offer flags.
type Flagger interface {
	Flags() []Flag
}

// CoreFlags are the core fields offered as flags.
func CoreFlags() []Flag {
	return []Flag{
		{Name: "data-dir", Field: "dataDir", Usage: "directory for all persistent state"},
		{Name: "listen", Field: "api.listen", Usage: "API listen address host:port", Listener: "127.0.0.1:%d"},
		{Name: "node", Field: "node", Usage: "node name"},
		{Name: "roles", Field: "roles", Usage: "comma-separated components to run (default all)"},
		{Name: "log-level", Field: "log.level", Usage: "debug, info, warn or error"},
		{Name: "log-format", Field: "log.format", Usage: "text or json"},
		{Name: "shutdown-grace", Field: "shutdownGrace", Usage: "how long each component may take to stop"},
	}
}
