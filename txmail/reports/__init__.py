"""Reports: what the console shows that is not a page (daily series, message search, a
message's timeline, SVG charts). Core code: it reads the store through the core modules and
imports no daemon, so the tracker's console and the CLI can both use it."""
