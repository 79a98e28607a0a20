//go:build !race

package gzran

const raceEnabled = false
