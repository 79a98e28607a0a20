package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is one command's measurement.
type result struct {
	Elapsed   time.Duration
	MaxRSSKiB int64
	Stdout    string
	// Marks are the times since the start at which the command's mark
	// lines reached the harness (see passes).
	Marks []time.Duration
	Err   error // the exit status with the tail of stderr
}

// exec runs argv as the benchmark user in dir, with the user's environment
// plus extra, and measures it: wall time from start to exit, and the peak
// RSS of the process tree as wait4 reports it (the largest of the process
// and the descendants it waited for).
//
// The RSS comes from GNU time (/usr/bin/time -f %M) when installed: a
// process exec'd straight from the harness inherits the harness's own peak
// RSS at exec (the kernel records the old mm's high-water mark), while one
// forked by the small time binary starts from almost nothing. Without it
// the figure is wait4's and has the harness's RSS (about 30 MiB) as a floor.
func (h *harness) exec(ctx context.Context, argv []string, dir string, extra []string) result {
	return h.execLog(ctx, argv, dir, extra, nil)
}

// execLog is exec that also copies the command's whole stderr to log (when
// not nil).
func (h *harness) execLog(ctx context.Context, argv []string, dir string, extra []string, log io.Writer) result {
	ctx, cancel := context.WithTimeout(ctx, h.opts.timeout)
	defer cancel()
	rssFile := ""
	if h.timeBin != "" {
		h.rssN++
		rssFile = filepath.Join(h.tmpDir, fmt.Sprintf("rss-%d-%d", os.Getpid(), h.rssN))
		argv = append([]string{h.timeBin, "-f", "%M", "-o", rssFile}, argv...)
		defer os.Remove(rssFile)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(h.userEnv(), extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(h.user.uid), Gid: uint32(h.user.gid), Groups: []uint32{}},
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	// Kill the process group this command started, and only that.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr tail
	start := time.Now()
	marks := &markWriter{start: start, out: &stdout}
	cmd.Stdout, cmd.Stderr = marks, io.Writer(&stderr)
	if log != nil {
		cmd.Stderr = io.MultiWriter(&stderr, log)
	}
	err := cmd.Run()
	r := result{Elapsed: time.Since(start), Stdout: stdout.String(), Marks: marks.at}
	if rssFile != "" {
		r.MaxRSSKiB = readRSS(rssFile)
	} else if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.MaxRSSKiB = ru.Maxrss
		}
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v", h.opts.timeout)
		}
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = fmt.Errorf("%s not found: run `make bench-deps` as root", argv[0])
		}
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		r.Err = err
	}
	return r
}

// readRSS reads GNU time's output: its last line is %M, the peak RSS in
// KiB (lines before it report a non-zero exit or a signal).
func readRSS(p string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	lines := strings.Fields(strings.TrimSpace(string(b)))
	if len(lines) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	return n
}

// userEnv is the contenders' environment: a login-like one for the user,
// with its runtime and temporary directories on the harness's tmpfs (podman
// keeps its pause process's pid there; skopeo and podman put big temporary
// files in TMPDIR).
func (h *harness) userEnv() []string {
	return []string{
		"HOME=" + h.user.home,
		"USER=" + h.user.name,
		"LOGNAME=" + h.user.name,
		"PATH=" + h.binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"XDG_RUNTIME_DIR=" + h.runtimeDir,
		"TMPDIR=" + h.tmpDir,
	}
}

// markWriter notes when each mark line goes through it, and passes every
// other line on to out. exec.Cmd copies the command's output to it as it
// comes, so a mark is noted within microseconds of its echo.
type markWriter struct {
	start time.Time
	out   io.Writer
	line  []byte // an unfinished line
	at    []time.Duration
}

func (m *markWriter) Write(p []byte) (int, error) {
	now := time.Since(m.start)
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.line = append(m.line, p...)
			break
		}
		m.line = append(m.line, p[:i+1]...)
		p = p[i+1:]
		if string(m.line) == mark+"\n" {
			m.at = append(m.at, now)
		} else {
			m.out.Write(m.line)
		}
		m.line = m.line[:0]
	}
	return n, nil
}

// tail keeps the last 4 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

func copyClose(w io.WriteCloser, r io.ReadCloser) (int64, error) {
	n, err := io.Copy(w, r)
	r.Close()
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// wipe empties dir (a contender's store) and gives it back to the user.
func (h *harness) wipe(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		// Read-only directories a contender left: make them writable.
		exec.Command("chmod", "-R", "u+rwx", dir).Run()
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("emptying store %s: %w", dir, err)
		}
	}
	return h.mkdirUser(dir)
}

func (h *harness) mkdirUser(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chown(dir, h.user.uid, h.user.gid)
}
