package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Result is what one run measured, after warmup.
type Result struct {
	Target  string
	Method  string
	Payload string
	Clients int
	Conns   int
	Carts   int
	// Elapsed is the measured window: from the end of warmup until the
	// last client's last call returned.
	Elapsed time.Duration
	// Ops counts successful calls in the window; errors are in Errors.
	Ops                     int64
	P50, P90, P99, Max, Min time.Duration
	// Errors counts failed calls in the window by gRPC status code name.
	Errors map[string]int64
}

// OpsPerSec is successful calls per second over the measured window.
func (r Result) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ErrorCount is the number of failed calls in the window.
func (r Result) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p% of the
// samples are less than or equal to it. It is always an observed value,
// never an interpolation. It returns 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summarize fills the latency fields of r from the successful calls'
// latencies; it sorts lat in place.
func summarize(r *Result, lat []time.Duration) {
	slices.Sort(lat)
	r.Ops = int64(len(lat))
	if len(lat) == 0 {
		return
	}
	r.Min = lat[0]
	r.P50 = percentile(lat, 50)
	r.P90 = percentile(lat, 90)
	r.P99 = percentile(lat, 99)
	r.Max = lat[len(lat)-1]
}

// addErrors merges per-client error counts into r.Errors by code name.
func addErrors(r *Result, counts map[codes.Code]int64) {
	for c, n := range counts {
		if r.Errors == nil {
			r.Errors = make(map[string]int64)
		}
		r.Errors[c.String()] += n
	}
}

// errorsText is "none" or "Unavailable=3 DeadlineExceeded=1", sorted by name.
func errorsText(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	names := make([]string, 0, len(errs))
	for n := range errs {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, errs[n])
	}
	return strings.Join(parts, " ")
}

// fmtDur prints a latency with three significant digits in a unit that
// suits it: 87.3µs, 1.24ms, 2.50s.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return trim3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return trim3(float64(d)/float64(time.Millisecond)) + "ms"
	default:
		return trim3(d.Seconds()) + "s"
	}
}

// trim3 formats v (1 <= v < 1000) with three significant digits.
func trim3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// WriteText prints r for a person.
func (r Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "target   %s %s (payload %s, %d carts)\n", r.Target, r.Method, r.Payload, r.Carts)
	fmt.Fprintf(w, "clients  %d over %d connection(s), measured %.2fs\n", r.Clients, r.Conns, r.Elapsed.Seconds())
	fmt.Fprintf(w, "ops      %d (%.0f ops/s)\n", r.Ops, r.OpsPerSec())
	fmt.Fprintf(w, "latency  p50 %s  p90 %s  p99 %s  max %s\n", fmtDur(r.P50), fmtDur(r.P90), fmtDur(r.P99), fmtDur(r.Max))
	fmt.Fprintf(w, "errors   %s\n", errorsText(r.Errors))
}

// resultJSON is the JSON form of a Result: latencies in microseconds.
type resultJSON struct {
	Target    string           `json:"target"`
	Method    string           `json:"method"`
	Payload   string           `json:"payload"`
	Clients   int              `json:"clients"`
	Conns     int              `json:"conns"`
	Carts     int              `json:"carts"`
	ElapsedS  float64          `json:"elapsed_s"`
	Ops       int64            `json:"ops"`
	OpsPerSec float64          `json:"ops_per_s"`
	MinUs     float64          `json:"min_us"`
	P50Us     float64          `json:"p50_us"`
	P90Us     float64          `json:"p90_us"`
	P99Us     float64          `json:"p99_us"`
	MaxUs     float64          `json:"max_us"`
	Errors    map[string]int64 `json:"errors"`
}

// MarshalJSON writes r as one flat object with latencies in microseconds.
func (r Result) MarshalJSON() ([]byte, error) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	errs := r.Errors
	if errs == nil {
		errs = map[string]int64{}
	}
	return json.Marshal(resultJSON{
		Target: r.Target, Method: r.Method, Payload: r.Payload,
		Clients: r.Clients, Conns: r.Conns, Carts: r.Carts,
		ElapsedS: r.Elapsed.Seconds(), Ops: r.Ops, OpsPerSec: r.OpsPerSec(),
		MinUs: us(r.Min), P50Us: us(r.P50), P90Us: us(r.P90), P99Us: us(r.P99), MaxUs: us(r.Max),
		Errors: errs,
	})
}
