package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
)

//go:embed page.html
var page []byte

// Limits on what a page may ask for.
const (
	maxNameLen      = 64
	maxWatchedUsers = 50
)

// Timing of the event streams.
const (
	// monitorRetry is how long a failed Monitor call waits before it is
	// made again (the proxy may be restarting).
	monitorRetry = time.Second
	// keepAlive is how often an idle event stream gets a comment line, so
	// that proxies and browsers in between keep it open.
	keepAlive = 15 * time.Second
)

// Gateway holds the users' Connect calls and serves the page and its
// event streams. It is safe for concurrent use.
type Gateway struct {
	client    pb.PresenceClient
	proxyAddr string
	retry     time.Duration

	// ctx is the parent of every Connect call; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// conns are the open Connect calls, by user.
	conns map[string]*connection
	// failures says why a user's last Connect call ended, when it was not
	// a disconnect: the page shows it until the user connects again.
	failures map[string]string
	// watchers are the event streams, woken when a connection changes.
	watchers map[chan struct{}]struct{}
	// calls counts the Connect goroutines, for Close.
	calls sync.WaitGroup
}

// connection is one open Connect call.
type connection struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once the call has ended
}

// NewGateway returns a gateway calling client; proxyAddr is only shown on
// the page. Close ends its Connect calls.
func NewGateway(client pb.PresenceClient, proxyAddr string) *Gateway {
	ctx, cancel := context.WithCancel(context.Background())
	return &Gateway{
		client:    client,
		proxyAddr: proxyAddr,
		retry:     monitorRetry,
		ctx:       ctx,
		cancel:    cancel,
		conns:     make(map[string]*connection),
		failures:  make(map[string]string),
		watchers:  make(map[chan struct{}]struct{}),
	}
}

// Close cancels every Connect call (the users go offline) and waits for
// their goroutines.
func (g *Gateway) Close() {
	// Under mu, so that Connect either sees the cancellation or has
	// added its call before Wait starts.
	g.mu.Lock()
	g.cancel()
	g.mu.Unlock()
	g.calls.Wait()
}

// Handler serves the page (GET /), the event stream (GET /events?user=a&user=b)
// and the connect and disconnect actions (POST /connect, POST /disconnect
// with a JSON body {"name": "alice"}). The JSON body keeps other sites'
// pages from posting there: a cross-origin JSON request needs a CORS
// preflight, which the gateway does not answer.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /events", g.serveEvents)
	mux.HandleFunc("POST /connect", g.action(g.Connect))
	mux.HandleFunc("POST /disconnect", g.action(func(name string) error {
		g.Disconnect(name)
		return nil
	}))
	return mux
}

// Connect opens a Connect call for name, unless one is open already. The
// call stays open until Disconnect or Close; if it ends otherwise (the
// proxy went away), the reason is kept and shown to every page watching
// name. The error is the reason the call could not be opened.
func (g *Gateway) Connect(name string) error {
	g.mu.Lock()
	if g.ctx.Err() != nil {
		g.mu.Unlock()
		return errors.New("the gateway is stopping")
	}
	if _, open := g.conns[name]; open {
		g.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(g.ctx)
	c := &connection{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	g.conns[name] = c
	delete(g.failures, name)
	g.calls.Add(1)
	g.mu.Unlock()
	g.wakeWatchers()

	stream, err := g.client.Connect(ctx, &pb.User{Name: name})
	if err != nil {
		g.ended(name, c, err)
		if ctx.Err() != nil {
			// Disconnected (or closed) while the call was being made.
			return nil
		}
		return errors.New(g.describe(err))
	}
	go func() {
		for {
			// Connect sends nothing; Recv returns when the call ends.
			if _, err := stream.Recv(); err != nil {
				g.ended(name, c, err)
				return
			}
		}
	}()
	return nil
}

// ended records that c, name's Connect call, has ended with err.
func (g *Gateway) ended(name string, c *connection, err error) {
	g.mu.Lock()
	if g.conns[name] == c {
		delete(g.conns, name)
	}
	if c.ctx.Err() == nil {
		// Not a disconnect: the proxy ended the call.
		g.failures[name] = "disconnected: " + g.describe(err)
	}
	g.mu.Unlock()
	c.cancel()
	close(c.done)
	g.calls.Done()
	g.wakeWatchers()
}

// Disconnect cancels name's Connect call, if it has one, and waits until
// the call has ended.
func (g *Gateway) Disconnect(name string) {
	g.mu.Lock()
	c := g.conns[name]
	delete(g.conns, name)
	delete(g.failures, name)
	g.mu.Unlock()
	if c == nil {
		g.wakeWatchers()
		return
	}
	c.cancel()
	<-c.done
}

// connState is what the page is told about a user's Connect call.
type connState struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
}

func (g *Gateway) connState(name string) connState {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, open := g.conns[name]
	return connState{Name: name, Connected: open, Error: g.failures[name]}
}

// watch registers an event stream; it is woken (without blocking the
// waker) whenever a connection changes. The returned func unregisters it.
func (g *Gateway) watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	g.watchers[ch] = struct{}{}
	g.mu.Unlock()
	return ch, func() {
		g.mu.Lock()
		delete(g.watchers, ch)
		g.mu.Unlock()
	}
}

func (g *Gateway) wakeWatchers() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ch := range g.watchers {
		select {
		case ch <- struct{}{}:
		default: // already woken; it reads the latest state anyway
		}
	}
}

// describe turns a gRPC error into a sentence for the page.
func (g *Gateway) describe(err error) string {
	if errors.Is(err, io.EOF) {
		return "the proxy ended the call"
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("the proxy at %s is unavailable (%s)", g.proxyAddr, st.Message())
	case codes.Unimplemented:
		return fmt.Sprintf("the proxy at %s does not serve the presence service (%s)", g.proxyAddr, st.Message())
	default:
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
}

// action serves POST /connect and /disconnect: it reads {"name": ...},
// runs do, and answers the user's connection state, or the error.
func (g *Gateway) action(do func(name string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send a JSON body {\"name\": ...}"})
			return
		}
		var body struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON body: " + err.Error()})
			return
		}
		name, err := checkName(body.Name)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := do(name); err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, g.connState(name))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// checkName validates a user name from the page.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", errors.New("a user needs a name")
	case !utf8.ValidString(name):
		return "", errors.New("a user name must be UTF-8")
	case utf8.RuneCountInString(name) > maxNameLen:
		return "", fmt.Errorf("a user name has at most %d characters", maxNameLen)
	}
	return name, nil
}

// event is one server-sent event.
type event struct {
	kind string // the SSE event name
	data any    // sent as JSON
}

// statusEvent is a user's presence, as Monitor reports it.
type statusEvent struct {
	Name   string `json:"name"`
	Online bool   `json:"online"`
}

// problemEvent says why a user's presence is unknown right now.
type problemEvent struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// serveEvents streams the presence of the users named by the user query
// parameters: "hello" first, then "connection" (the gateway's Connect call
// for a user), "status" (the user's presence from Monitor) and "problem"
// (Monitor failed; it is retried every second) events, as they happen.
func (g *Gateway) serveEvents(w http.ResponseWriter, r *http.Request) {
	var names []string
	seen := make(map[string]bool)
	for _, raw := range r.URL.Query()["user"] {
		name, err := checkName(raw)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(names) > maxWatchedUsers {
		http.Error(w, fmt.Sprintf("watch at most %d users at once", maxWatchedUsers), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)

	ctx, cancel := context.WithCancel(r.Context())
	events := make(chan event)
	var monitors sync.WaitGroup
	defer func() {
		cancel()
		monitors.Wait()
	}()
	woken, unwatch := g.watch()
	defer unwatch()
	for _, name := range names {
		monitors.Add(1)
		go func() {
			defer monitors.Done()
			g.monitor(ctx, name, events)
		}()
	}

	send := func(ev event) error {
		b, err := json.Marshal(ev.data)
		if err != nil {
			return fmt.Errorf("encode %s event: %w", ev.kind, err)
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.kind, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(event{"hello", map[string]any{"proxy": g.proxyAddr, "users": names}}); err != nil {
		return
	}
	// sent is the connection state each user's page was last told.
	sent := make(map[string]connState)
	sendConnStates := func() error {
		for _, name := range names {
			st := g.connState(name)
			if prev, ok := sent[name]; ok && prev == st {
				continue
			}
			sent[name] = st
			if err := send(event{"connection", st}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := sendConnStates(); err != nil {
		return
	}
	ticker := time.NewTicker(keepAlive)
	defer ticker.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			err = send(ev)
		case <-woken:
			err = sendConnStates()
		case <-ticker.C:
			if _, err = io.WriteString(w, ": keep-alive\n\n"); err == nil {
				err = rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// monitor runs Monitor for name and sends its statuses to events until ctx
// ends. A failed call is reported as a problem and made again after
// g.retry.
func (g *Gateway) monitor(ctx context.Context, name string, events chan<- event) {
	emit := func(ev event) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		err := g.monitorOnce(ctx, name, emit)
		if ctx.Err() != nil {
			return
		}
		if !emit(event{"problem", problemEvent{Name: name, Error: "presence unknown: " + g.describe(err)}}) {
			return
		}
		t := time.NewTimer(g.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// monitorOnce makes one Monitor call and relays it until it ends; it
// returns why it ended.
func (g *Gateway) monitorOnce(ctx context.Context, name string, emit func(event) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.client.Monitor(ctx, &pb.User{Name: name})
	if err != nil {
		return err
	}
	for {
		st, err := stream.Recv()
		if err != nil {
			return err
		}
		if !emit(event{"status", statusEvent{Name: name, Online: st.GetOnline()}}) {
			return ctx.Err()
		}
	}
}
