package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which is 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time (user + system) pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// the fields after its closing parenthesis start at field 3 (state).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// utime and stime are fields 14 and 15, so 11 and 12 after field 3.
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat %q", pid, s)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: stat field %q: %w", pid, v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// systemBusy returns the CPU time all processes on the machine have used
// so far: user, nice, system and steal from the "cpu" line of /proc/stat.
// Interrupt and softirq time are left out: the kernel's loopback
// networking runs there for every call, charged to no process, and would
// otherwise show up as "other" load.
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read machine CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal ...; guest time is
	// already counted in user.
	for i, v := range f[1:9] {
		if i >= 3 && i <= 6 {
			continue // idle, iowait, irq, softirq
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat field %q: %w", v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// watched is a process whose CPU time a load row reports.
type watched struct {
	name string
	pid  int
}

// cpuMeter reads the CPU time of a few processes, and of the whole
// machine, at the start and end of a measured window. The machine's share
// not used by the watched processes shows how much else was running: on a
// shared machine that is the main source of noise.
type cpuMeter struct {
	procs []watched
	begin []time.Duration
	used  []time.Duration // filled by end

	sysBegin, sysUsed time.Duration
	err               error
}

// mark reads every process's CPU time; the first call starts the window
// and the second ends it. A read error is kept and reported by result.
func (m *cpuMeter) mark(begin bool) {
	now := make([]time.Duration, len(m.procs))
	for i, p := range m.procs {
		t, err := cpuTime(p.pid)
		if err != nil && m.err == nil {
			m.err = err
		}
		now[i] = t
	}
	sys, err := systemBusy()
	if err != nil && m.err == nil {
		m.err = err
	}
	if begin {
		m.begin, m.sysBegin = now, sys
		return
	}
	if m.begin == nil {
		return // the window never started (interrupted during warmup)
	}
	m.used = make([]time.Duration, len(now))
	for i := range now {
		m.used[i] = now[i] - m.begin[i]
	}
	m.sysUsed = sys - m.sysBegin
}

// others is the CPU time the rest of the machine used over the window:
// everything but the watched processes. Tick rounding can make it
// slightly negative; it is clamped to zero.
func (m *cpuMeter) others() time.Duration {
	var ours time.Duration
	for _, u := range m.used {
		ours += u
	}
	return max(m.sysUsed-ours, 0)
}

// procCPU is one process's CPU use over a load row's window.
type procCPU struct {
	name    string
	used    time.Duration
	perCall time.Duration
}

// result divides each process's CPU time by the calls made.
func (m *cpuMeter) result(calls int64) ([]procCPU, error) {
	if m.err != nil {
		return nil, m.err
	}
	if m.used == nil || calls == 0 {
		return nil, nil
	}
	out := make([]procCPU, len(m.procs))
	for i, p := range m.procs {
		out[i] = procCPU{name: p.name, used: m.used[i], perCall: m.used[i] / time.Duration(calls)}
	}
	return out, nil
}
