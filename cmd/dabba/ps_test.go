package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/store"
)

func TestPsCommand(t *testing.T) {
	for _, tc := range []struct {
		argv    []string
		noTrunc bool
		want    string
	}{
		{[]string{"sleep", "30"}, false, `"sleep 30"`},
		{[]string{"docker-entrypoint.sh", "postgres"}, false, `"docker-entrypoint.s…"`},
		{[]string{"docker-entrypoint.sh", "postgres"}, true, `"docker-entrypoint.sh postgres"`},
		{[]string{"sh", "-c", "a\nb"}, false, `"sh -c a b"`},
		{nil, false, `""`},
	} {
		if got := psCommand(tc.argv, tc.noTrunc); got != tc.want {
			t.Errorf("psCommand(%q, %v) = %s, want %s", tc.argv, tc.noTrunc, got, tc.want)
		}
	}
}

func TestPrintContainers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	id := strings.Repeat("0123456789abcdef", 4)
	cs := []store.ContainerInfo{
		{ID: id, Name: "web", Image: "docker.io/library/alpine:latest", Rootfs: "fuse",
			Command: []string{"sleep", "30"}, Created: now.Add(-5 * time.Second), PID: 7},
		{ID: "fedcba9876543210", Image: "busybox", Rootfs: "overlay", Command: []string{"sh"}, Created: now.Add(-3 * time.Hour)},
	}
	print := func(quiet, asJSON, noTrunc bool) string {
		var out strings.Builder
		g := &globals{stdout: &out}
		if err := printContainers(g, cs, now, quiet, asJSON, noTrunc); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	table := print(false, false, false)
	var rows [][]string
	for _, l := range lines(table) {
		rows = append(rows, strings.Split(strings.TrimSpace(l), "   "))
	}
	want := [][]string{
		{"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "ROOTFS", "NAMES"},
		{"0123456789ab", "docker.io/library/alpine:latest", `"sleep 30"`, "5 seconds ago", "fuse", "web"},
		{"fedcba987654", "busybox", `"sh"`, "3 hours ago", "overlay", "<none>"},
	}
	if len(rows) != len(want) {
		t.Fatalf("table:\n%s", table)
	}
	for i := range want {
		var got []string
		for _, f := range rows[i] {
			if f = strings.TrimSpace(f); f != "" {
				got = append(got, f)
			}
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("row %d = %q, want %q\n%s", i, got, want[i], table)
		}
	}
	if got := print(true, false, false); got != "0123456789ab\nfedcba987654\n" {
		t.Errorf("-q printed %q", got)
	}
	if got := print(true, false, true); got != id+"\nfedcba9876543210\n" {
		t.Errorf("-q --no-trunc printed %q", got)
	}
	var back []store.ContainerInfo
	if err := json.Unmarshal([]byte(print(false, true, false)), &back); err != nil || !reflect.DeepEqual(back, cs) {
		t.Errorf("--format json read back %+v, %v", back, err)
	}
	var out strings.Builder
	if err := printContainers(&globals{stdout: &out}, nil, now, false, true, false); err != nil || strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("--format json of none printed %q", out.String())
	}
}

func TestPsFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "extra"}, "ps takes no arguments"},
		{[]string{"ps", "--format", "yaml"}, `--format "yaml"`},
		{[]string{"inspect", "--type", "volume", "x"}, `--type "volume"`},
		{[]string{"inspect"}, "want at least one"},
	} {
		var out, errb strings.Builder
		code := realMain(append([]string{"--root", t.TempDir()}, tc.args...), &out, &errb)
		if code != exitUsageStatus || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("dabba %q: status %d, stderr %q; want %d and %q", tc.args, code, errb.String(), exitUsageStatus, tc.want)
		}
	}
	// Nothing running: an empty table, and inspect says what it looked for.
	root := t.TempDir()
	var out, errb strings.Builder
	if code := realMain([]string{"--root", root, "ps"}, &out, &errb); code != 0 || len(lines(out.String())) != 1 {
		t.Errorf("ps on an empty store: status %d, %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	code := realMain([]string{"--root", root, "inspect", "web"}, &out, &errb)
	if code != exitDabba || !strings.Contains(errb.String(), `no running container is named "web"`) || !strings.Contains(errb.String(), "dabba pull web") {
		t.Errorf("inspect of nothing: status %d, stderr %q", code, errb.String())
	}
}

// TestPs runs named containers as the test user and looks at them with
// dabba ps and dabba inspect, then reuses the name after they end.
func TestPs(t *testing.T) {
	e := newRunEnv(t)
	root := filepath.Join(e.home, "store-ps")
	argv := []string{"sh", "-c", "echo ready; exec sleep 30"}
	// --init: sleep as PID 1 would ignore stop's SIGTERM.
	web := e.start(t, root, append([]string{"--init", "--name", "web", "--rootfs", "overlay", e.bbox}, argv...)...)
	id := filepath.Base(web.dir)

	table := e.dabbaAt(t, root, "ps").Stdout
	rows := lines(table)
	if len(rows) != 2 || !strings.HasPrefix(rows[0], "CONTAINER ID") {
		t.Fatalf("dabba ps printed:\n%s", table)
	}
	for _, want := range []string{id[:12], "web", "overlay", e.bbox, `"sh -c echo ready; e…"`, "ago"} {
		if !strings.Contains(rows[1], want) {
			t.Errorf("dabba ps row %q lacks %q", rows[1], want)
		}
	}
	if got := e.dabbaAt(t, root, "ps", "-q").Stdout; got != id[:12]+"\n" {
		t.Errorf("dabba ps -q printed %q, want %q", got, id[:12])
	}
	var listed []store.ContainerInfo
	if err := json.Unmarshal([]byte(e.dabbaAt(t, root, "ps", "--format", "json").Stdout), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("dabba ps --format json: %+v, %v", listed, err)
	}
	c := listed[0]
	if c.ID != id || c.Name != "web" || c.Rootfs != "overlay" || !reflect.DeepEqual(c.Command, argv) ||
		c.PID != web.cmd.Process.Pid || c.Created.IsZero() || c.ImageID == "" {
		t.Errorf("dabba ps --format json: %+v; want id %s, name web, rootfs overlay, command %q, pid %d", c, id, argv, web.cmd.Process.Pid)
	}

	// inspect finds it by name and by id prefix; --type image does not.
	for _, ref := range []string{"web", id[:5], id} {
		var got []store.ContainerInfo
		out := e.dabbaAt(t, root, "inspect", ref).Stdout
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], c) {
			t.Errorf("dabba inspect %s printed %s (%v), want %+v", ref, out, err, c)
		}
	}
	if o := e.dabbaRaw(t, root, "inspect", "--type", "image", "web"); o.Code != exitDabba || !strings.Contains(o.Stderr, "image not known") {
		t.Errorf("dabba inspect --type image web: status %d, stderr %q", o.Code, o.Stderr)
	}

	// The name is taken while web runs.
	o := e.dabbaRaw(t, root, "run", "--network", "none", "--name", "web", e.bbox, "true")
	wantErr := fmt.Sprintf("the name %q is already used by running container %s: choose another name", "web", id[:12])
	if o.Code != exitDabba || !strings.Contains(o.Stderr, wantErr) {
		t.Errorf("second dabba run --name web: status %d, stderr %q; want %d and %q", o.Code, o.Stderr, exitDabba, wantErr)
	}

	// Once web has exited: nothing listed, and the name is free.
	web.stop(t)
	if rows := lines(e.dabbaAt(t, root, "ps").Stdout); len(rows) != 1 {
		t.Errorf("dabba ps after the container exited: %q", rows)
	}
	if o := e.dabbaRaw(t, root, "inspect", "web"); o.Code != exitDabba || !strings.Contains(o.Stderr, `no running container is named "web"`) {
		t.Errorf("dabba inspect web after it exited: status %d, stderr %q", o.Code, o.Stderr)
	}
	// Its dabba killed -9 frees the name too (the kernel drops the lock).
	web = e.start(t, root, append([]string{"--name", "web", e.bbox}, argv...)...)
	web.kill(t)
	if got := e.dabbaAt(t, root, "ps", "-q").Stdout; got != "" {
		t.Errorf("dabba ps -q after dabba was killed: %q", got)
	}
	if out := e.dabbaAt(t, root, "run", "--network", "none", "--name", "web", e.bbox, "echo", "again").Stdout; out != "again\n" {
		t.Errorf("dabba run --name web after the holder died printed %q", out)
	}
	if names, _ := filepath.Glob(filepath.Join(root, "locks", "name-*")); len(names) != 0 {
		t.Errorf("name locks left: %q", names)
	}
}

// dabbaRaw runs dabba --root root args... as the test user and returns how
// it ended, whatever the status.
func (e *runEnv) dabbaRaw(t *testing.T, root string, args ...string) testenv.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return e.u.RunAs(ctx, e.home, nil, "", e.dabba, append([]string{"--root", root}, args...)...)
}
