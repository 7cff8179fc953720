package ingress

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
)

// FuzzHTTPEntry feeds arbitrary requests to the HTTP side of the port (the
// handler behind HTTP/1.1 connections) with the test model routed to the
// fakes. It must never panic, must answer every request, must never hand
// the function a payload that does not parse as the method's input, and
// must answer HTTP/JSON errors with {code, message, details} or, for a
// function's failure, plain text.
func FuzzHTTPEntry(f *testing.F) {
	for _, s := range []struct {
		method, target, contentType, extra string
		body                               string
	}{
		{"POST", "/cart/u1/items/add", "application/json", "", `{"productId":"p","quantity":2}`},
		{"POST", "/cart/u1/items/add", "application/json", "", `{"productId":"p","quantity":-2}`},
		{"GET", "/carts/u1", "", "", ""},
		{"GET", "/carts/u1/items?x=1", "", "", ""},
		{"POST", "/cart/u1/items/p/remove", "", "", ""},
		{"POST", "/things", "application/json", "", `{"name":"n","when":"2020-01-01T00:00:00Z","meta":{"a":1},"extra":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}`},
		{"PUT", "/things/a?count=3&tags=x", "application/json", "", `{"id":"i"}`},
		{"GET", "/count/1/true/2.5/3", "", "", ""},
		{"GET", "/files/a/b%2Fc", "", "", ""},
		{"POST", "/fail", "application/json", "", `{"name":"x","count":5}`},
		{"POST", "/com.example.shoppingcart.ShoppingCart/GetCart", "application/json", "Connect-Protocol-Version", `{"userId":"u"}`},
		{"POST", "/test.Things/Watch", "application/connect+json", "", "\x00\x00\x00\x00\x0c{\"name\":\"w\"}"},
		{"POST", "/com.example.shoppingcart.ShoppingCart/GetCart", "application/grpc-web+proto", "", "\x00\x00\x00\x00\x04\x0a\x02u1"},
		{"POST", "/com.example.shoppingcart.ShoppingCart/GetCart", "application/grpc-web-text", "", "AAAAAAQKAnUx"},
		{"OPTIONS", "/any/x", "", "Origin", ""},
		{"GET", "/watch/w?count=2", "", "Accept", ""},
		{"POST", "/watch", "application/json", "", `{"name":"fail"}`},
		{"GET", "/download/fail", "", "", ""},
	} {
		f.Add(s.method, s.target, s.contentType, s.extra, []byte(s.body))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := New(Options{MaxRecvMsgSize: 1 << 16, CORSAllowedOrigins: []string{"*"}, Log: log})
	carts, things := newFakeCarts(), &fakeThings{}
	srv.SetRouter(route.New(testModelHTTP(f), map[string]route.Handler{
		discovery.EventSourced: carts,
		discovery.Action:       things,
	}, nil, log))
	srv.SetReady()
	handler := srv.httpHandler()

	f.Fuzz(func(t *testing.T, method, target, contentType, extra string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) {
			return
		}
		req := &http.Request{
			Method:        method,
			URL:           u,
			RequestURI:    target,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
			Host:          "proxy",
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if extra != "" && !strings.ContainsAny(extra, ":\r\n ") {
			req.Header.Set(extra, "1")
		}
		// Classify first: the transcoder edits the request's headers.
		rpc := isRPCRequest(req)
		rec := httptest.NewRecorder()
		serve(handler, rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if n := carts.malformed.Load() + things.malformed.Load(); n > 0 {
			t.Fatalf("%d malformed payloads reached the function", n)
		}
		if rpc || rec.Code < 400 || rec.Code == http.StatusServiceUnavailable && strings.Contains(rec.Body.String(), "probe") {
			return
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
			if rec.Code != http.StatusInternalServerError {
				t.Fatalf("plain-text error with status %d: %q", rec.Code, rec.Body.String())
			}
			return
		}
		var e restError
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Message == "" || e.Details == nil {
			t.Fatalf("%s %s: error body %q is not {code, message, details}", method, target, rec.Body.String())
		}
	})
}

// serve calls h as net/http would: a panic with http.ErrAbortHandler (a
// raw stream cut after its start) aborts the response, and is no crash.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			panic(v)
		}
	}()
	h.ServeHTTP(w, r)
}

// validMethod reports whether m is an HTTP token, as net/http requires of
// a request it receives.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}
