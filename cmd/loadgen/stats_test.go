package main

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func ms(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100 is the 50th", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, time.Millisecond},
		{"p50 of four rounds up to the 2nd", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of five is the middle", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p99 of ten is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of ten is the 9th", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	lat := ms(5, 1, 4, 2, 3, 100, 6, 7, 8, 9)
	r := Result{Elapsed: 2 * time.Second}
	summarize(&r, lat)
	if !slices.IsSorted(lat) {
		t.Error("latencies not sorted in place")
	}
	want := Result{Elapsed: 2 * time.Second, Ops: 10,
		Min: ms(1)[0], P50: ms(5)[0], P90: ms(9)[0], P99: ms(100)[0], Max: ms(100)[0]}
	if r.Ops != want.Ops || r.Min != want.Min || r.P50 != want.P50 || r.P90 != want.P90 || r.P99 != want.P99 || r.Max != want.Max {
		t.Errorf("summarize = %+v, want %+v", r, want)
	}
	if got := r.OpsPerSec(); got != 5 {
		t.Errorf("ops/s = %v, want 5", got)
	}
}

func TestErrorsAndJSON(t *testing.T) {
	r := Result{Target: "t", Method: "/a.B/C", Clients: 2, Conns: 1, Elapsed: time.Second, P50: 1500 * time.Microsecond}
	addErrors(&r, map[codes.Code]int64{codes.Unavailable: 2})
	addErrors(&r, map[codes.Code]int64{codes.Unavailable: 1, codes.DeadlineExceeded: 4})
	if got, want := errorsText(r.Errors), "DeadlineExceeded=4 Unavailable=3"; got != want {
		t.Errorf("errors = %q, want %q", got, want)
	}
	if r.ErrorCount() != 7 {
		t.Errorf("error count = %d, want 7", r.ErrorCount())
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["p50_us"] != 1500.0 || back["clients"] != 2.0 || back["errors"].(map[string]any)["Unavailable"] != 3.0 {
		t.Errorf("JSON = %s", b)
	}
	if s := errorsText(nil); s != "none" {
		t.Errorf("no errors = %q", s)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		800 * time.Nanosecond:    "800ns",
		87300 * time.Nanosecond:  "87.3µs",
		1240 * time.Microsecond:  "1.24ms",
		250 * time.Millisecond:   "250ms",
		2500 * time.Millisecond:  "2.50s",
		5 * time.Microsecond:     "5.00µs",
		999999 * time.Nanosecond: "1000µs",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
