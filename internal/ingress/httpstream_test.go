package ingress

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Server-streaming methods over HTTP/JSON (httpstream.go), served by the
// fake test.Things: Watch streams copies of its request, Download HttpBody
// chunks (http_fixtures_test.go).

const sseType = "text/event-stream"

// thing is the JSON the fake's Watch prints for a request with only a name.
func thing(name string) string {
	return `{"name":"` + name + `","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`
}

func ndjson(lines ...string) string {
	return strings.Join(lines, "\n") + "\n"
}

func sse(events ...string) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString("data: " + e + "\n\n")
	}
	return b.String()
}

func TestHTTPServerStreams(t *testing.T) {
	h := startHTTP(t, Options{})
	for _, tc := range []struct {
		name, method, path, contentType, body string
		header                                []string
		status                                int
		wantType, want                        string
		wantHeader                            []string // name, value
	}{
		{name: "JSON lines", method: "GET", path: "/watch/w", status: 200, wantType: jsonType,
			want: ndjson(thing("w-0"), thing("w-1"), thing("w-2"))},
		{name: "server-sent events", method: "GET", path: "/watch/w", header: []string{"Accept", sseType}, status: 200, wantType: sseType,
			want: sse(thing("w-0"), thing("w-1"), thing("w-2")), wantHeader: []string{"Cache-Control", "no-cache"}},
		{name: "server-sent events among other media types", method: "GET", path: "/watch/w",
			header: []string{"Accept", "text/html, Text/Event-Stream; q=0.5", "Accept", "*/*"}, status: 200, wantType: sseType,
			want: sse(thing("w-0"), thing("w-1"), thing("w-2"))},
		{name: "text/event-stream with quality 0 is refused", method: "GET", path: "/watch/w",
			header: []string{"Accept", "text/event-stream;q=0, application/json"}, status: 200, wantType: jsonType,
			want: ndjson(thing("w-0"), thing("w-1"), thing("w-2"))},
		{name: "query parameters by JSON and proto names, repeated", method: "GET",
			path: "/watch/q?count=7&tags=a&tags=b&display_name=D&inner.id=i", status: 200, wantType: jsonType,
			want: ndjson(
				`{"name":"q-0","count":"7","flag":false,"ratio":0,"data":"","inner":{"id":"i","n":0},"tags":["a","b"],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`,
				`{"name":"q-1","count":"7","flag":false,"ratio":0,"data":"","inner":{"id":"i","n":0},"tags":["a","b"],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`,
				`{"name":"q-2","count":"7","flag":false,"ratio":0,"data":"","inner":{"id":"i","n":0},"tags":["a","b"],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`)},
		{name: "body * with original field names, query ignored", method: "POST", path: "/watch?count=9", contentType: jsonType,
			body: `{"name":"p","display_name":"D","count":"3"}`, header: []string{"Accept", sseType}, status: 200, wantType: sseType,
			want: sse(
				`{"name":"p-0","count":"3","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`,
				`{"name":"p-1","count":"3","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`,
				`{"name":"p-2","count":"3","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"D","labels":{}}`)},
		{name: "body field, the rest from path and query", method: "PUT", path: "/watch/b?flag=true", contentType: jsonType,
			body: `{"id":"x","n":2}`, status: 200, wantType: jsonType,
			want: ndjson(
				`{"name":"b-0","count":"0","flag":true,"ratio":0,"data":"","inner":{"id":"x","n":2},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`,
				`{"name":"b-1","count":"0","flag":true,"ratio":0,"data":"","inner":{"id":"x","n":2},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`,
				`{"name":"b-2","count":"0","flag":true,"ratio":0,"data":"","inner":{"id":"x","n":2},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`)},
		{name: "response_body prints the field of every message", method: "GET", path: "/watch/r/inner?inner.n=5", header: []string{"Accept", sseType},
			status: 200, wantType: sseType, want: sse(`{"id":"","n":5}`, `{"id":"","n":5}`, `{"id":"","n":5}`)},
		{name: "percent-encoded path variable", method: "GET", path: "/watch/a%2Fb", status: 200, wantType: jsonType,
			want: ndjson(thing("a/b-0"), thing("a/b-1"), thing("a/b-2"))},
		{name: "first reply's metadata become headers", method: "GET", path: "/watch/m", header: []string{"X-Test", "hi", "Accept", sseType},
			status: 200, wantType: sseType, want: sse(thing("m-0"), thing("m-1"), thing("m-2")), wantHeader: []string{"X-Echo", "hi"}},
		{name: "no messages, JSON lines", method: "GET", path: "/watch/none", status: 200, wantType: jsonType, want: ""},
		{name: "no messages, events", method: "GET", path: "/watch/none", header: []string{"Accept", sseType}, status: 200, wantType: sseType, want: ""},
		{name: "failure mid-stream, JSON lines", method: "GET", path: "/watch/fail", status: 200, wantType: jsonType,
			want: ndjson(thing("fail-0"), `{"error":{"code":2,"message":"watch failed","details":[]}}`)},
		{name: "failure mid-stream, events", method: "GET", path: "/watch/fail", header: []string{"Accept", sseType}, status: 200, wantType: sseType,
			want: sse(thing("fail-0")) + "event: error\ndata: {\"code\":2,\"message\":\"watch failed\",\"details\":[]}\n\n"},
		{name: "failure before the first message is a unary error", method: "GET", path: "/watch/failfirst", status: 500,
			wantType: "text/plain; charset=utf-8", want: "watch failed first"},
		{name: "failure before the first message, events accepted only", method: "GET", path: "/watch/failfirst", header: []string{"Accept", sseType},
			status: 500, wantType: jsonType, want: `{"code":2,"message":"watch failed first","details":[]}`},
		{name: "HttpBody chunks raw, typed by the first message", method: "GET", path: "/download/d", status: 200, wantType: "text/plain",
			want: "d chunk 0\nd chunk 1\nd chunk 2\n"},
		{name: "HttpBody typed by the first reply's content-type metadata", method: "GET", path: "/download/meta", status: 200,
			wantType: "application/x-custom", want: "meta chunk 0\nmeta chunk 1\nmeta chunk 2\n"},
		{name: "HttpBody untyped", method: "GET", path: "/download/untyped", status: 200,
			wantType: "application/octet-stream", want: "untyped chunk 0\nuntyped chunk 1\nuntyped chunk 2\n"},
		{name: "HttpBody as events", method: "GET", path: "/download/e", header: []string{"Accept", sseType}, status: 200, wantType: sseType,
			want: sse(`{"contentType":"text/plain","data":"ZSBjaHVuayAwCg==","extensions":[]}`,
				`{"contentType":"text/plain","data":"ZSBjaHVuayAxCg==","extensions":[]}`,
				`{"contentType":"text/plain","data":"ZSBjaHVuayAyCg==","extensions":[]}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := h.do(t, tc.method, tc.path, tc.contentType, tc.body, tc.header...)
			wantResponse(t, tc.method+" "+tc.path, code, body, tc.status, tc.want)
			if got := hdr.Get("Content-Type"); got != tc.wantType {
				t.Errorf("content type %q, want %q", got, tc.wantType)
			}
			for i := 0; i+1 < len(tc.wantHeader); i += 2 {
				if got := hdr.Get(tc.wantHeader[i]); got != tc.wantHeader[i+1] {
					t.Errorf("header %s = %q, want %q", tc.wantHeader[i], got, tc.wantHeader[i+1])
				}
			}
			for k := range hdr {
				if strings.HasPrefix(k, "Grpc-") {
					t.Errorf("gRPC header %s leaked into the HTTP response", k)
				}
			}
		})
	}
}

// TestHTTPServerStreamBadRequests: a request to a streaming method that
// cannot be transcoded gets the same 400 as a unary one, naming the field,
// whatever the client accepts, and the function is not called.
func TestHTTPServerStreamBadRequests(t *testing.T) {
	h := startHTTP(t, Options{})
	for _, tc := range []struct {
		name, method, path, body string
		want                     string
	}{
		{"query parameter of the wrong type", "GET", "/watch/a?count=many", "", `"count"`},
		{"unknown query parameter", "GET", "/watch/a?colour=red", "", `"colour"`},
		{"nested query parameter of the wrong type", "GET", "/watch/a?inner.n=x", "", `inner.n`},
		{"empty path variable", "GET", "/watch/", "", `path variable "name" is empty`},
		{"unknown field in body *", "POST", "/watch", `{"colour":"red"}`, `unknown field "colour"`},
		{"wrong type in body *", "POST", "/watch", `{"count":"many"}`, `invalid value for int64 field count`},
		{"wrong type in a body field", "PUT", "/watch/x", `{"n":"x"}`, `field n`},
		{"malformed JSON", "POST", "/watch", `{"name":`, `unexpected EOF`},
	} {
		for _, accept := range []string{"", sseType} {
			t.Run(tc.name+" "+accept, func(t *testing.T) {
				before := h.things.calls.Load()
				body, ct := tc.body, ""
				if body != "" {
					ct = jsonType
				}
				var hdr []string
				if accept != "" {
					hdr = []string{"Accept", accept}
				}
				code, got, b := h.do(t, tc.method, tc.path, ct, body, hdr...)
				var e struct {
					Code    int               `json:"code"`
					Message string            `json:"message"`
					Details []json.RawMessage `json:"details"`
				}
				if err := json.Unmarshal([]byte(b), &e); err != nil || e.Details == nil {
					t.Fatalf("error body %s is not {code, message, details}", b)
				}
				if code != 400 || e.Code != 3 || !strings.Contains(e.Message, tc.want) || got.Get("Content-Type") != jsonType {
					t.Fatalf("%s %s: %d %s %s\nwant 400 INVALID_ARGUMENT with %q", tc.method, tc.path, code, got.Get("Content-Type"), b, tc.want)
				}
				if after := h.things.calls.Load(); after != before {
					t.Errorf("the function was called %d times for a bad request", after-before)
				}
			})
		}
	}
}

// TestHTTPServerStreamFlushAndDisconnect: each message reaches the client
// while the stream is still open, and a client that goes away cancels the
// function's side of the stream.
func TestHTTPServerStreamFlushAndDisconnect(t *testing.T) {
	h := startHTTP(t, Options{})
	// The timeout only keeps a failing test from waiting forever for
	// headers that never come.
	client := &http.Client{Timeout: 20 * time.Second}
	for i, tc := range []struct {
		accept, wantType, wantFirst string
		wantLines                   int // lines the first message takes
	}{
		{"", jsonType, thing("forever-0-0"), 1},
		{sseType, sseType, "data: " + thing("forever-1-0"), 2},
	} {
		t.Run("accept "+tc.accept, func(t *testing.T) {
			name := fmt.Sprintf("forever-%d", i)
			req, err := http.NewRequest("GET", h.base+"/watch/"+name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.wantType {
				resp.Body.Close()
				t.Fatalf("%s %s, want 200 %s", resp.Status, resp.Header.Get("Content-Type"), tc.wantType)
			}
			// The stream stays open: the first message must arrive on its
			// own, flushed.
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			defer func() {
				resp.Body.Close()
				for range lines {
				}
			}()
			for n := range tc.wantLines {
				select {
				case got, ok := <-lines:
					if !ok {
						t.Fatal("the stream ended; it should stay open")
					}
					if n == 0 && got != tc.wantFirst {
						t.Fatalf("first line %q, want %q", got, tc.wantFirst)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the first message did not arrive while the stream was open")
				}
			}
			select {
			case got := <-h.things.cancelled:
				t.Fatalf("stream %s cancelled before the client went away", got)
			case <-time.After(50 * time.Millisecond):
			}
			resp.Body.Close()
			select {
			case got := <-h.things.cancelled:
				if got != name {
					t.Fatalf("cancelled %s, want %s", got, name)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the function's stream was not cancelled after the client went away")
			}
		})
	}
}

// TestHTTPServerStreamRawFailure: a raw HttpBody stream that fails after
// its start cannot say so in the body: the response is cut, and the client
// sees an error instead of a complete body.
func TestHTTPServerStreamRawFailure(t *testing.T) {
	h := startHTTP(t, Options{})
	resp, err := http.Get(h.base + "/download/fail")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "fail chunk 0\n" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%d %q, read error %v; want 200, the first chunk, then an unexpected EOF", resp.StatusCode, b, err)
	}
	// The proxy keeps serving.
	code, _, body := h.do(t, "GET", "/download/d", "", "")
	wantResponse(t, "download after a cut stream", code, body, 200, "d chunk 0\nd chunk 1\nd chunk 2\n")
}

// TestShutdownEndsOpenHTTPStreams: a stream that would never end on its own
// does not hold a shutdown past its deadline; its call is cancelled and its
// connection cut.
func TestShutdownEndsOpenHTTPStreams(t *testing.T) {
	h := startHTTP(t, Options{})
	req, err := http.NewRequest("GET", h.base+"/watch/forever-shutdown", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", sseType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("first event: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	h.srv.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %v with a 300ms deadline", took)
	}
	select {
	case name := <-h.things.cancelled:
		if name != "forever-shutdown" {
			t.Errorf("cancelled %q", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the open stream's call was not cancelled by the shutdown")
	}
	if _, err := io.ReadAll(r); err == nil {
		// A cut connection may also read as a clean end of a chunked body
		// only if the terminating chunk was sent; it must not have been.
		t.Error("the stream ended cleanly; want it cut")
	}
}
