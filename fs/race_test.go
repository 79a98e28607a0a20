//go:build race

package fs

// raceEnabled: the race detector slows the server several times over, so
// a reader overtakes pushes more often.
const raceEnabled = true
