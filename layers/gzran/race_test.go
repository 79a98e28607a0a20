//go:build race

package gzran

// raceEnabled shrinks the test inputs: the race detector slows inflating
// about tenfold, and the suite should stay within seconds.
const raceEnabled = true
