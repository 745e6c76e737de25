//go:build race

package e2e

// raceEnabled builds the cube binary under test with the race detector
// when the suite itself runs with -race, so the API server, placement,
// node agent and shims are race-checked end to end.
const raceEnabled = true
