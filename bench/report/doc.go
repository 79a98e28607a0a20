// Package report turns the benchmark's raw runs into its results: a table of
// median, min and max per scenario, image and contender, with the ratio to
// the peer (podman) and the bytes fetched, written as Markdown, JSON and an
// SVG bar chart. It does no measuring; everything here is computed from the
// runs, so it is tested without root, registries or containers.
package report
