// Package cgroups puts a container in a cgroup of its own with podman's
// resource limits (--memory, --memory-swap, --pids-limit, --cpus), always
// below the caller's own cgroup and never anywhere else.
//
//	cg, err := cgroups.New(id, cgroups.Limits{MemoryBytes: 512 << 20, Pids: 100})
//	...                        // start the child, stopped on its handshake
//	cg.Add(childPID)           // the parent, before releasing the child
//	...                        // the container runs and exits
//	cg.Remove()                // rmdir; kills nothing
//
// # Where the cgroup goes
//
// The caller's own cgroup comes from /proc/self/cgroup, mapped onto the
// cgroup mounts of /proc/self/mountinfo. The container's cgroup is the
// directory dabba-<name> inside it:
//
//   - cgroup v1 (legacy, and systemd's hybrid mode, where the unified tree
//     carries no controllers): one directory per controller the limits need
//     (memory, pids, cpu), each in the caller's cgroup of that hierarchy. It
//     works where those directories are writable by the caller, as after
//     root ran `chown UID DIR DIR/cgroup.procs DIR/tasks`. A v1 hierarchy for
//     any of the three controllers makes the layout v1.
//   - cgroup v2: one leaf directory in the caller's cgroup, which must be
//     writable with its cgroup.procs (delegated, as systemd does for users
//     with Delegate=yes), and list the controllers in cgroup.controllers.
//     Missing controllers are enabled in the caller's cgroup.subtree_control.
//
// # The v2 limit: no internal processes
//
// On v2 the kernel lets a cgroup other than the root enable a domain
// controller (memory, io) for its children only while it holds no processes
// itself, and the caller's own cgroup always holds the caller. dabba moves no
// process but the container's own, so it cannot empty it: the memory limit
// works on v2 only where the caller's cgroup already has memory in
// cgroup.subtree_control (the root cgroup, for a rootful dabba outside a
// cgroup namespace), and otherwise New fails with ErrNotDelegated saying so
// and suggesting systemd-run --user --scope -p MemoryMax=... around dabba.
// The threaded controllers, pids and cpu, are exempt from that rule (the
// kernel's cgroup_vet_subtree_control_enable lets a domain cgroup with
// processes enable them as long as no domain controller is enabled there),
// so New enables them even while the caller's cgroup holds processes.
// Moving dabba itself into a leaf beside the container would lift the limit
// for memory too; that is left out on purpose, as nothing but the
// container's own process is ever moved.
//
// The v2 code paths are unit-tested over a directory laid out like a
// cgroup2 tree; they were not exercised on a real kernel where this package
// was written (a hybrid machine whose cgroup2 tree had no controllers).
//
// # Limits, as podman writes them
//
//   - memory: v1 memory.limit_in_bytes, v2 memory.max. Swap follows podman:
//     without --memory-swap the container may use as much swap as memory
//     (podman's pkg/specgenutil sets memory+swap to twice the memory), so v1
//     memory.memsw.limit_in_bytes = 2×memory and v2 memory.swap.max =
//     memory (runc and crun write memory+swap minus memory). With
//     MemorySwap = -1 swap is unlimited. Without swap accounting (no memsw or
//     memory.swap.max file) memory is limited without swap, as podman does.
//   - pids: pids.max.
//   - cpus: CFS period 100000µs and quota CPUs×100000µs (v1
//     cpu.cfs_period_us and cpu.cfs_quota_us, v2 cpu.max "QUOTA 100000"), as
//     podman converts --cpus.
//
// Sizes parse like podman's --memory (go-units RAMInBytes): binary units b,
// k, m, g (and t, p), a bare number is bytes, fractions allowed, "0" is no
// limit.
//
// # When nothing is delegated
//
// Limits that are all zero need no cgroup: New then makes nothing and
// succeeds anywhere, so a container without limits always runs. With limits
// and no delegation New returns an error wrapping ErrNotDelegated
// (*NotDelegatedError) that names the cgroup, says how to delegate it and
// that running without limits works.
//
// What podman does, and what the CLI should do with that error to match:
//   - cgroup v1, rootless: podman ignores every limit with the warning
//     "Resource limits are not supported and ignored on cgroups V1 rootless
//     systems" and runs the container (pkg/specgen/generate/validate.go,
//     verifyContainerResourcesCgroupV1; its system test "podman run
//     --memory=0 runtime option" checks that warning). So where
//     Ignorable(err) (Version 1), cmd/dabba warns with the error's text
//     ("WARNING: resource limits ignored: ...") and runs without a cgroup.
//     dabba does better than podman where the v1 directories are delegated:
//     the limits are then applied.
//   - cgroup v2: podman hands the limits to crun or runc, which fail when
//     the controller is not delegated (for example "opening file
//     `memory.swap.max` for writing: Permission denied"). So on Version 2
//     cmd/dabba fails with the error (exit 125).
//
// Remove never kills: the container's processes are gone when it runs (its
// PID 1 exited, and the PID namespace took the rest). Should processes
// remain, Remove returns an error naming the cgroup and their PIDs.
package cgroups
