// Package ingress is the proxy's public port: every discovered service over
// gRPC without generated code, gRPC server reflection, and the health
// endpoints, all on HTTP_PORT.
package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// streamWorkers is how many goroutines serve calls; more concurrent calls
// than this get goroutines of their own, as without workers.
const streamWorkers = 64

// Flow-control windows of the proxy's HTTP/2 connections, public and to the
// function. Fixed windows turn off gRPC's bandwidth-delay estimation, which
// answers bursts of data with pings (a syscall and a frame each way) to
// size windows it would rarely need to grow: a stream may have 1 MiB in
// flight, a connection 16 MiB.
const (
	StreamWindow = 1 << 20
	ConnWindow   = 16 << 20
)

// Options configure a Server.
type Options struct {
	// MaxRecvMsgSize bounds a request message, in bytes.
	MaxRecvMsgSize int
	// CORSAllowedOrigins are the origins browsers may call the HTTP side
	// from ("*" for any); none turns CORS off.
	CORSAllowedOrigins []string
	Log                *slog.Logger
}

// Server serves the public port. Until SetRouter is called, user services
// answer UNAVAILABLE and /ready answers 503.
type Server struct {
	log  *slog.Logger
	grpc *grpc.Server
	http *http.Server
	// cancelHTTP ends the context of every request served over HTTP.
	cancelHTTP context.CancelFunc
	router     atomic.Pointer[route.Router]
	// api serves HTTP/JSON, gRPC-Web and Connect for the router (http.go).
	api    atomic.Pointer[httpAPI]
	maxMsg int
	cors   *corsPolicy
	// notReady is the reason the proxy is not ready; empty when it is.
	notReady atomic.Pointer[string]
}

// New returns a server; Serve starts it.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{log: opts.Log, maxMsg: opts.MaxRecvMsgSize, cors: newCORSPolicy(opts.CORSAllowedOrigins)}
	s.SetNotReady("the user function has not been discovered yet")
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(newRawCodec()),
		grpc.UnknownServiceHandler(s.handleStream),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		// Reuse handler goroutines: a fresh goroutine per call grows its
		// stack on every call (about a tenth of the proxy's CPU).
		grpc.NumStreamWorkers(streamWorkers),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
	)
	NewReflection(s.Model).Register(s.grpc)
	// Requests served over HTTP see base end when a shutdown runs out of
	// time, so that open streams (SSE, JSON lines, Connect) end with it.
	base, cancel := context.WithCancel(context.Background())
	s.cancelHTTP = cancel
	s.http = &http.Server{
		Handler:     s.httpHandler(),
		Protocols:   httpProtocols(),
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
	}
	return s
}

// SetRouter makes the discovered services callable, over gRPC and over the
// HTTP side (HTTP/JSON, gRPC-Web, Connect).
func (s *Server) SetRouter(r *route.Router) {
	api := newHTTPAPI(r, s.maxMsg, s.log)
	if api.err != nil {
		s.log.Error("HTTP/JSON, gRPC-Web and Connect are unavailable: the HTTP API could not be built", "err", api.err)
	}
	s.api.Store(api)
	s.router.Store(r)
}

// SetReady marks the proxy ready.
func (s *Server) SetReady() { s.notReady.Store(nil) }

// SetNotReady marks the proxy not ready, for the given reason.
func (s *Server) SetNotReady(reason string) { s.notReady.Store(&reason) }

// Ready reports whether the proxy is ready, and if not, why.
func (s *Server) Ready() (bool, string) {
	if r := s.notReady.Load(); r != nil {
		return false, *r
	}
	return true, ""
}

// Model returns the model being served, or nil before discovery.
func (s *Server) Model() *discovery.Model {
	if r := s.router.Load(); r != nil {
		return r.Model()
	}
	return nil
}

// Serve serves on l until Shutdown; it returns nil after a shutdown.
func (s *Server) Serve(l net.Listener) error {
	m := newMux(l)
	var g errgroup.Group
	g.Go(m.serve)
	g.Go(func() error {
		// Shutdown closes the shared listener; which server notices first
		// is a race, and either way it is a normal end.
		if err := s.grpc.Serve(m.grpc); !errors.Is(err, net.ErrClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(m.http); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	return g.Wait()
}

// Shutdown stops accepting connections and waits for calls in flight until
// ctx ends; then it cuts the remaining ones.
func (s *Server) Shutdown(ctx context.Context) {
	s.SetNotReady("shutting down")
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	if err := s.http.Shutdown(ctx); err != nil {
		// Time is up and HTTP calls are still open (streams, typically):
		// cut their connections first, so that a stream ended by the
		// shutdown cannot look complete to its client (a cancelled handler
		// returning first would let net/http end the body cleanly).
		_ = s.http.Close()
	}
	// End the calls of the cut connections; after a clean shutdown this
	// only releases the base context.
	s.cancelHTTP()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// handleStream serves every gRPC method that is not the reflection service.
func (s *Server) handleStream(_ any, stream grpc.ServerStream) error {
	full, ok := grpc.MethodFromServerStream(stream)
	if !ok {
		return status.Error(codes.Internal, "no method name on the stream")
	}
	err := s.dispatch(stream, full)
	if err != nil {
		logFailedCall(s.log, stream.Context(), full, err)
	}
	return err
}

// logFailedCall writes one line per call that ended with an error: at warn
// for the proxy's own failures, at debug for the caller's mistakes and the
// function's failure replies, which are normal traffic.
func logFailedCall(log *slog.Logger, ctx context.Context, method string, err error) {
	level := slog.LevelDebug
	switch status.Code(err) {
	case codes.Internal, codes.DataLoss:
		level = slog.LevelWarn
	}
	if log.Enabled(ctx, level) {
		st := status.Convert(err)
		log.Log(ctx, level, "call failed", "method", method, "code", st.Code().String(), "message", st.Message())
	}
}

func (s *Server) dispatch(stream grpc.ServerStream, full string) error {
	r := s.router.Load()
	if r == nil {
		_, reason := s.Ready()
		return status.Errorf(codes.Unavailable, "the proxy is not ready: %s", reason)
	}
	service, method, ok := splitMethod(full)
	if !ok {
		return status.Errorf(codes.Unimplemented, "malformed method name %q", full)
	}
	svc := r.Model().Services[service]
	if svc == nil {
		return status.Errorf(codes.Unimplemented, "unknown service %s", service)
	}
	m := svc.Methods[method]
	if m == nil {
		return status.Errorf(codes.Unimplemented, "unknown method %s of service %s", method, service)
	}
	if m.ClientStreaming || m.ServerStreaming {
		return s.streaming(stream, r, m)
	}
	return s.unary(stream, r, m)
}

// metadataFor returns the request headers as metadata for actions; entity
// commands never carry metadata (PROTOCOL.md §7.6).
func metadataFor(ctx context.Context, m *discovery.Method) *protocol.Metadata {
	if m.Service.EntityType != discovery.Action {
		return nil
	}
	return requestMetadata(ctx)
}

func (s *Server) streaming(stream grpc.ServerStream, r *route.Router, m *discovery.Method) error {
	recv := func() ([]byte, error) {
		var msg rawMessage
		if err := stream.RecvMsg(&msg); err != nil {
			return nil, err
		}
		return msg, nil
	}
	headerSent := false
	send := func(reply *protocol.Reply) error {
		if !headerSent {
			headerSent = true
			if h := responseHeaders(reply.GetMetadata()); h != nil {
				if err := stream.SetHeader(h); err != nil {
					s.log.Debug("setting response headers failed", "err", err)
				}
			}
		}
		out := rawMessage(reply.GetPayload().GetValue())
		return stream.SendMsg(&out)
	}
	return r.Stream(stream.Context(), m, recv, send, metadataFor(stream.Context(), m))
}

func (s *Server) unary(stream grpc.ServerStream, r *route.Router, m *discovery.Method) error {
	var req rawMessage
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	reply, err := r.Unary(stream.Context(), m, req, metadataFor(stream.Context(), m))
	if err != nil {
		return err
	}
	if reply == nil {
		return nil
	}
	if h := responseHeaders(reply.GetMetadata()); h != nil {
		if err := stream.SetHeader(h); err != nil {
			s.log.Debug("setting response headers failed", "err", err)
		}
	}
	out := rawMessage(reply.GetPayload().GetValue())
	return stream.SendMsg(&out)
}

func splitMethod(full string) (service, method string, ok bool) {
	full = strings.TrimPrefix(full, "/")
	i := strings.LastIndexByte(full, '/')
	if i <= 0 || i == len(full)-1 {
		return "", "", false
	}
	return full[:i], full[i+1:], true
}

// requestMetadata turns request headers into Cloudstate metadata (ING-4).
func requestMetadata(ctx context.Context) *protocol.Metadata {
	in, _ := metadata.FromIncomingContext(ctx)
	if len(in) == 0 {
		return nil
	}
	md := &protocol.Metadata{Entries: make([]*protocol.MetadataEntry, 0, len(in))}
	for k, vs := range in {
		if k == "content-type" {
			continue
		}
		for _, v := range vs {
			e := &protocol.MetadataEntry{Key: k}
			if strings.HasSuffix(k, "-bin") {
				e.Value = &protocol.MetadataEntry_BytesValue{BytesValue: []byte(v)}
			} else {
				e.Value = &protocol.MetadataEntry_StringValue{StringValue: v}
			}
			md.Entries = append(md.Entries, e)
		}
	}
	return md
}

// responseHeaders lifts the string entries of a reply's metadata into
// response headers, skipping names gRPC reserves for itself.
func responseHeaders(md *protocol.Metadata) metadata.MD {
	if len(md.GetEntries()) == 0 {
		return nil
	}
	h := metadata.MD{}
	for _, e := range md.GetEntries() {
		k := strings.ToLower(e.GetKey())
		sv, isString := e.GetValue().(*protocol.MetadataEntry_StringValue)
		if !isString || !validHeaderName(k) || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "te" {
			continue
		}
		h.Append(k, sv.StringValue)
	}
	if len(h) == 0 {
		return nil
	}
	return h
}

func validHeaderName(k string) bool {
	if k == "" || strings.HasSuffix(k, "-bin") {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// httpHandler serves the HTTP/1.1 side of the port: the health probes, then
// HTTP/JSON, gRPC-Web and Connect (http.go).
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	live := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}
	mux.HandleFunc("GET /live", live)
	mux.HandleFunc("GET /alive", live) // the reference proxy's path (DISC-9)
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok, reason := s.Ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	// Everything else goes to the HTTP API without ServeMux, which would
	// redirect paths with empty segments instead of letting the API name the
	// empty path variable.
	return knativeProbe(s.cors.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/live", "/alive", "/ready":
			mux.ServeHTTP(w, r)
		default:
			s.serveHTTPAPI(w, r)
		}
	})))
}

// knativeProbe answers Knative's queue-proxy probe before anything else (ING-10).
func knativeProbe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get("K-Network-Probe")
		if v == "" {
			next.ServeHTTP(w, r)
			return
		}
		if v == "queue" {
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, "queue")
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "unexpected probe header value: %s", v)
	})
}

// writeJSONError writes the JSON error body used for every HTTP error:
// {"code": <gRPC code number>, "message": "...", "details": []}.
func writeJSONError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	body, _ := json.Marshal(restError{Code: code, Message: msg, Details: []json.RawMessage{}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	w.Write(body)
}
