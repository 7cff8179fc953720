package httpe2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// line is one line of a streamed body and when it arrived.
type line struct {
	text string
	at   time.Duration // since the request was sent
}

// getStream sends GET url with the Accept header (if any) from plain
// net/http, as curl would, and returns the response and a channel of the
// body's lines as they arrive; the channel closes at the end of the body.
// Cleanup closes the body.
func getStream(t *testing.T, url, accept string) (*http.Response, <-chan line) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	// The timeout keeps a broken stream from hanging the test.
	client := &http.Client{Timeout: 30 * time.Second}
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan line)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- line{sc.Text(), time.Since(sent)}
		}
	}()
	t.Cleanup(func() {
		resp.Body.Close()
		for range lines {
		}
	})
	return resp, lines
}

// TestCountdownStreams streams the cart-actions sample's Countdown (a
// server-streaming action with an HTTP rule) through the real proxy as
// JSON lines and as Server-Sent Events: every tick arrives when the
// function sends it, not when the stream ends.
func TestCountdownStreams(t *testing.T) {
	s := startSample(t, "cartactions", bins.cartactions)
	const interval = 150 * time.Millisecond
	for _, tc := range []struct {
		name, query, accept, wantType string
		want                          func(n int) []string // the lines of tick n
	}{
		{"JSON lines", "interval_ms=150", "", "application/json",
			func(n int) []string { return []string{fmt.Sprintf(`{"remaining":%d}`, n)} }},
		{"Server-Sent Events", "intervalMs=150", "text/event-stream", "text/event-stream",
			func(n int) []string { return []string{fmt.Sprintf(`data: {"remaining":%d}`, n), ""} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, lines := getStream(t, s.base+"/cartactions/countdown/3?"+tc.query, tc.accept)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.wantType {
				t.Fatalf("%s %s, want 200 %s", resp.Status, resp.Header.Get("Content-Type"), tc.wantType)
			}
			var got []line
			for l := range lines {
				got = append(got, l)
			}
			var want []string
			for n := 3; n >= 0; n-- {
				want = append(want, tc.want(n)...)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d lines %v, want %q", len(got), got, want)
			}
			for i := range want {
				if got[i].text != want[i] {
					t.Fatalf("line %d = %q, want %q (all: %v)", i, got[i].text, want[i], got)
				}
			}
			// Three intervals separate the first tick from the last; had
			// the proxy buffered the stream, they would arrive together.
			if gap := got[len(got)-1].at - got[0].at; gap < 2*interval {
				t.Fatalf("the first and last ticks arrived %v apart, want about %v: the stream was not flushed per message", gap, 3*interval)
			}
		})
	}
}

// TestCountdownErrors: before the first tick, failures and untranscodable
// requests are answered as for a unary call, whichever form was asked for.
func TestCountdownErrors(t *testing.T) {
	s := startSample(t, "cartactions", bins.cartactions)
	for _, accept := range []string{"", "text/event-stream"} {
		for _, tc := range []struct {
			path     string
			status   int
			wantType string
			want     string
		}{
			{"/cartactions/countdown/0", 500, "text/plain; charset=utf-8", "Cannot count down from 0: choose 1 to 100"},
			{"/cartactions/countdown/1?interval_ms=soon", 400, "application/json", `"interval_ms"`},
			{"/cartactions/countdown/1?colour=red", 400, "application/json", `"colour"`},
		} {
			t.Run(tc.path+" "+accept, func(t *testing.T) {
				resp, lines := getStream(t, s.base+tc.path, accept)
				var body []string
				for l := range lines {
					body = append(body, l.text)
				}
				got := strings.Join(body, "\n")
				wantType := tc.wantType
				if tc.status == 500 && accept != "" {
					// A client that does not take text/plain gets the
					// failure as JSON.
					wantType = "application/json"
				}
				if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != wantType || !strings.Contains(got, strings.Trim(tc.want, `"`)) {
					t.Fatalf("%s %s %q, want %d %s with %s", resp.Status, resp.Header.Get("Content-Type"), got, tc.status, wantType, tc.want)
				}
			})
		}
	}
}

// TestCountdownClientGoesAway: a client that closes the connection
// mid-stream ends the call; the proxy and the function keep serving.
func TestCountdownClientGoesAway(t *testing.T) {
	s := startSample(t, "cartactions", bins.cartactions)
	for i := range 3 {
		resp, lines := getStream(t, s.base+"/cartactions/countdown/100?interval_ms=20", "text/event-stream")
		if resp.StatusCode != 200 {
			t.Fatalf("%s", resp.Status)
		}
		first := <-lines
		if first.text != `data: {"remaining":100}` {
			t.Fatalf("stream %d: first line %q", i, first.text)
		}
		resp.Body.Close()
		for range lines {
		}
	}
	resp, lines := getStream(t, s.base+"/cartactions/countdown/1?interval_ms=1", "")
	var got []string
	for l := range lines {
		got = append(got, l.text)
	}
	if resp.StatusCode != 200 || strings.Join(got, "\n") != "{\"remaining\":1}\n{\"remaining\":0}" {
		t.Fatalf("after the cut streams: %s %q", resp.Status, got)
	}
}
