package cgroups

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Limits are a container's resource limits. The zero value limits nothing.
type Limits struct {
	// MemoryBytes is podman's --memory: the most memory the container may
	// use, in bytes; 0 means no limit.
	MemoryBytes int64
	// MemorySwap is podman's --memory-swap: memory plus swap, in bytes. 0
	// (unset) means podman's default, twice MemoryBytes (as much swap as
	// memory); -1 means unlimited swap. It needs MemoryBytes.
	MemorySwap int64
	// Pids is podman's --pids-limit: the most processes and threads; 0 or -1
	// means no limit.
	Pids int64
	// CPUs is podman's --cpus: CPU time as a number of CPUs (1.5 is 150ms
	// every 100ms); 0 means no limit.
	CPUs float64
}

// IsZero reports whether l limits nothing, so no cgroup is needed.
func (l Limits) IsZero() bool {
	return l.MemoryBytes == 0 && l.MemorySwap == 0 && l.Pids <= 0 && l.CPUs == 0
}

// Validate checks l the way podman checks its flags.
func (l Limits) Validate() error {
	switch {
	case l.MemoryBytes < 0:
		return fmt.Errorf("memory limit %d: must not be negative", l.MemoryBytes)
	case l.MemorySwap < -1:
		return fmt.Errorf("memory+swap limit %d: must be -1 (unlimited swap) or a size", l.MemorySwap)
	case l.MemorySwap != 0 && l.MemoryBytes == 0:
		return errors.New("memory+swap limit set without a memory limit: set --memory too")
	case l.MemorySwap > 0 && l.MemorySwap < l.MemoryBytes:
		return fmt.Errorf("memory+swap limit %d is below the memory limit %d: it counts memory plus swap, so it must be at least the memory limit", l.MemorySwap, l.MemoryBytes)
	case l.Pids < -1:
		return fmt.Errorf("pids limit %d: must be -1 (unlimited) or a positive number", l.Pids)
	case math.IsNaN(l.CPUs) || math.IsInf(l.CPUs, 0) || l.CPUs < 0:
		return fmt.Errorf("CPU limit %v: must be a non-negative number", l.CPUs)
	case l.CPUs != 0 && l.CPUs < MinCPUs:
		return fmt.Errorf("CPU limit %v: the smallest limit is %.2f", l.CPUs, MinCPUs)
	}
	return nil
}

// controllers lists the controllers l needs, in a fixed order.
func (l Limits) controllers() []string {
	var cs []string
	if l.MemoryBytes > 0 {
		cs = append(cs, Memory)
	}
	if l.Pids > 0 {
		cs = append(cs, Pids)
	}
	if l.CPUs > 0 {
		cs = append(cs, CPU)
	}
	return cs
}

// limitFile is one value to write into a control file of the container's
// cgroup. Optional files are skipped when the kernel lacks them (swap
// accounting off): podman then limits memory without swap, with a warning.
type limitFile struct {
	controller string
	name       string
	value      string
	optional   bool
}

// swapTotal is the memory+swap limit in bytes, or -1 for unlimited swap.
func (l Limits) swapTotal() int64 {
	switch {
	case l.MemorySwap == -1:
		return -1
	case l.MemorySwap > 0:
		return l.MemorySwap
	}
	// podman (pkg/specgenutil LimitToSwap): --memory without --memory-swap
	// allows as much swap as memory.
	if l.MemoryBytes > math.MaxInt64/2 {
		return -1
	}
	return 2 * l.MemoryBytes
}

// cpuQuota is the CFS quota in microseconds per cpuPeriod, truncated as
// podman's CoresToPeriodAndQuota does.
func (l Limits) cpuQuota() int64 {
	q := int64(l.CPUs * cpuPeriod)
	if q < 1000 {
		q = 1000 // the kernel's minimum quota, 1ms
	}
	return q
}

// files lists the control files to write, in order, for cgroup version v.
// The order matters on v1, where memory.memsw.limit_in_bytes may never be
// below memory.limit_in_bytes.
func (l Limits) files(v int) []limitFile {
	var fs []limitFile
	if l.MemoryBytes > 0 {
		mem := strconv.FormatInt(l.MemoryBytes, 10)
		total := l.swapTotal()
		if v == 1 {
			fs = append(fs, limitFile{Memory, "memory.limit_in_bytes", mem, false})
			fs = append(fs, limitFile{Memory, "memory.memsw.limit_in_bytes", strconv.FormatInt(total, 10), true})
		} else {
			// v2 limits swap alone: memory.swap.max is memory+swap minus
			// memory, as runc and crun convert the OCI value.
			swap := "max"
			if total >= 0 {
				swap = strconv.FormatInt(total-l.MemoryBytes, 10)
			}
			fs = append(fs, limitFile{Memory, "memory.max", mem, false})
			fs = append(fs, limitFile{Memory, "memory.swap.max", swap, true})
		}
	}
	if l.Pids > 0 {
		fs = append(fs, limitFile{Pids, "pids.max", strconv.FormatInt(l.Pids, 10), false})
	}
	if l.CPUs > 0 {
		quota, period := strconv.FormatInt(l.cpuQuota(), 10), strconv.Itoa(cpuPeriod)
		if v == 1 {
			fs = append(fs, limitFile{CPU, "cpu.cfs_period_us", period, false})
			fs = append(fs, limitFile{CPU, "cpu.cfs_quota_us", quota, false})
		} else {
			fs = append(fs, limitFile{CPU, "cpu.max", quota + " " + period, false})
		}
	}
	return fs
}
