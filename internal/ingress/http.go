package ingress

// HTTP/JSON, gRPC-Web and Connect on the public port.
//
// Native gRPC connections go to grpc-go (the fast path, untouched by this
// file). Everything else arrives at net/http, over HTTP/1.1 or cleartext
// HTTP/2 (mux.go): the probes, and then the transcoder built by internal/httpapi
// from the discovered descriptors and their google.api.http rules. The
// transcoder turns HTTP/JSON, gRPC-Web and Connect requests into gRPC and
// hands them to rpcHandler, an in-process gRPC server over net/http that
// calls route.Router directly with the raw request bytes, as the native
// gRPC path does. There is no network hop and no generated code.
//
// What a client sees:
//
//   - HTTP/JSON: the bindings of HTTP-1 (rules, additional bindings, the
//     default POST /<service>/<method> with body "*"). Responses are JSON
//     as HTTP-7 prints it. Request errors — malformed JSON, a value of the
//     wrong type, an unknown field or query parameter, an empty path
//     variable — are 400 with a JSON body {"code": 3, "message": ...,
//     "details": []} whose message names the field; nothing malformed
//     reaches the function. An unknown path is 404, a known path with the
//     wrong verb 405 (with Allow), a body that is not JSON 415 (the
//     reference says 400), a body over --max-inbound-message-size 413
//     (whether its length is declared or found while reading).
//   - As in the reference (HTTP-5): path variables win over query
//     parameters naming the same field, a rule with body "*" ignores the
//     query, a rule without body ignores the body. Unlike it: a repeated
//     value for a singular query parameter keeps the last one, one field
//     named twice under its two spellings (display_name and displayName)
//     is a 400 rather than a random pick, bools in
//     the path must be lower case, and when different templates match one
//     path the router prefers literal segments over variables (identical
//     bindings: the last declared wins, HTTP-1). The probe paths /live,
//     /alive and /ready come before any binding.
//   - A gRPC status from the call becomes the HTTP status vanguard maps it
//     to (INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503, ...) with
//     the JSON body above. The exception is UNKNOWN, the status of a
//     function's failure (HTTP-9, ERR-1): 500 with the failure's
//     description alone as a text/plain body, as the reference proxy and
//     its TCK expect, when the client accepts text/plain (or anything, or
//     sends no Accept); clients that accept only JSON get the JSON body.
//   - Server-streaming methods stream over HTTP/JSON as HTTP-8 says:
//     Server-Sent Events when Accept includes text/event-stream, else the
//     raw data of a google.api.HttpBody output, else one JSON object per
//     line; the request is decoded exactly as for a unary method, by a
//     transcoder that sees these methods as unary (httpstream.go: headers,
//     errors mid-stream, cancellation). A client-streaming method whose
//     input is HttpBody reads the raw request body. Other client-streaming
//     and bidirectional methods answer 415 over HTTP/JSON; they are served
//     over Connect and gRPC-Web (server and client streaming over
//     HTTP/1.1) and native gRPC (all kinds).
//     Bidirectional streams need HTTP/2: the port's mux (mux.go) looks at
//     the first request of each cleartext HTTP/2 connection and sends
//     connections that open with Connect or gRPC-Web to net/http, which
//     serves them all stream shapes; native gRPC stays with grpc-go.
//   - A unary call the function answers with no reply returns the method's
//     default (empty) message over these protocols, since none of them can
//     express "no message" for a unary call.
//   - CORS is off unless --cors-allowed-origins is set.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/httpapi"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// httpAPI is the HTTP side of one router: built when the router is set and
// swapped atomically with it.
type httpAPI struct {
	api     *httpapi.API
	handler http.Handler
	// rest serves HTTP/JSON: handler's bindings with server streams
	// declared unary, which rpcHandler streams itself (httpstream.go).
	rest http.Handler
	// err is why the API could not be built; the HTTP side then answers 500.
	err error
}

// newHTTPAPI builds the transcoder for r from the bindings discovery
// compiled (discovery.Model.HTTP); a model built any other way has none, and
// its HTTP side answers 500 with that reason.
func newHTTPAPI(r *route.Router, maxMsg int, log *slog.Logger) *httpAPI {
	api := r.Model().HTTP
	if api == nil {
		return &httpAPI{err: errors.New("the model has no compiled HTTP bindings (it was not built by discovery)")}
	}
	opts := httpapi.Options{
		Handler:         &rpcHandler{router: r, maxMsg: maxMsg, log: log},
		NotFound:        http.HandlerFunc(notFound),
		MaxMessageBytes: maxMsg,
	}
	h, err := api.Transcoder(opts)
	if err != nil {
		return &httpAPI{err: err}
	}
	opts.ServerStreamsAsUnary = true
	rest, err := api.Transcoder(opts)
	if err != nil {
		return &httpAPI{err: err}
	}
	return &httpAPI{api: api, handler: h, rest: rest}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeJSONError(w, http.StatusNotFound, codes.NotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
}

// serveHTTPAPI serves every request of the HTTP side that is not a probe.
func (s *Server) serveHTTPAPI(w http.ResponseWriter, r *http.Request) {
	a := s.api.Load()
	if a == nil {
		_, reason := s.Ready()
		writeJSONError(w, http.StatusServiceUnavailable, codes.Unavailable, "the proxy is not ready: "+reason)
		return
	}
	if a.err != nil {
		writeJSONError(w, http.StatusInternalServerError, codes.Internal, "the HTTP API could not be built: "+a.err.Error())
		return
	}
	// Route on the path as sent: the transcoder splits it at '/' and
	// percent-decodes each captured segment, so "%2F" stays inside a
	// variable's value instead of splitting it (HTTP-4).
	r.URL.Path, r.URL.RawPath = r.URL.EscapedPath(), ""
	state := new(callState)
	if isRPCRequest(r) {
		r = r.WithContext(context.WithValue(r.Context(), callStateKey{}, state))
		if web, text := isGRPCWeb(r); web {
			gw, r := adaptGRPCWeb(flushGate{w, state}, r, text)
			a.handler.ServeHTTP(gw, r)
			gw.finish()
			return
		}
		a.handler.ServeHTTP(flushGate{w, state}, r)
		return
	}
	if s.maxMsg > 0 && r.ContentLength > int64(s.maxMsg) {
		writeJSONError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
			fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, s.maxMsg))
		return
	}
	if field, ok := a.api.EmptyVariable(r.Method, r.URL.Path); ok {
		writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument,
			fmt.Sprintf("path variable %q is empty in %s", field, r.URL.Path))
		return
	}
	ignoreBody := r.ContentLength != 0 && a.api.IgnoresBody(r.Method, r.URL.Path)
	if r.URL.RawQuery != "" {
		q := filterQuery(r, a.api)
		if c, ok := a.api.QueryConflict(r.Method, r.URL.Path, q); ok {
			writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument,
				fmt.Sprintf("query parameters %q and %q both set field %q: send one of them", c.First, c.Second, c.Field))
			return
		}
	}
	ct := r.Header.Get("Content-Type")
	if ct != "" && ct != "application/json" {
		// The transcoder takes JSON only as "application/json" exactly or
		// with "; charset=utf-8"; accept any spelling of it.
		if mt, params, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" &&
			(params["charset"] == "" || strings.EqualFold(params["charset"], "utf-8")) {
			r.Header.Set("Content-Type", "application/json")
		}
	}
	state.rest = newRESTStream(w, r, a.api)
	rw := &restWriter{w: w, r: r, state: state, contentType: ct}
	tr := r.WithContext(context.WithValue(r.Context(), callStateKey{}, state))
	if ignoreBody {
		// On the copy only: the server must still see (and discard) the
		// body it received.
		tr.Body, tr.ContentLength = http.NoBody, 0
		tr.Header = r.Header.Clone()
		tr.Header.Del("Content-Type")
	}
	a.rest.ServeHTTP(rw, tr)
	rw.finish()
	if state.rest.aborted.Load() {
		// A raw stream failed after its start (httpstream.go).
		panic(http.ErrAbortHandler)
	}
}

// filterQuery removes the query parameters the reference proxy would not
// apply (httpapi.API.QueryFilter) and returns the ones left, parsed.
func filterQuery(r *http.Request, api *httpapi.API) url.Values {
	dropAll, drop := api.QueryFilter(r.Method, r.URL.Path)
	if dropAll {
		r.URL.RawQuery = ""
		return nil
	}
	q := r.URL.Query()
	n := len(q)
	for _, f := range drop {
		delete(q, f)
	}
	if len(q) != n {
		r.URL.RawQuery = q.Encode()
	}
	return q
}

// callState is what rpcHandler tells the writers wrapped around the
// transcoder about one call, through the request's context (callStateKey).
type callState struct {
	// reached is set once the request was transcoded and handed to the
	// router: an error before that is the request's fault, whatever code the
	// transcoder gave it.
	reached atomic.Bool
	// streaming is set for streaming methods. The transcoder flushes at the
	// end of every call; for a unary call that only splits the response into
	// more writes (and chunks), so flushes pass only for streams.
	streaming atomic.Bool
	// rest is set for HTTP/JSON requests, whose server streams rpcHandler
	// writes itself (httpstream.go).
	rest *restStream
}

type callStateKey struct{}

func stateOf(ctx context.Context) *callState {
	if st, ok := ctx.Value(callStateKey{}).(*callState); ok {
		return st
	}
	return new(callState)
}

// flushGate passes flushes through for streaming calls only (callState).
type flushGate struct {
	http.ResponseWriter
	state *callState
}

func (g flushGate) Flush() {
	if !g.state.streaming.Load() {
		return
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// isRPCRequest reports whether r uses gRPC, gRPC-Web or Connect rather than
// HTTP/JSON, the way the transcoder classifies requests.
func isRPCRequest(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc"), strings.HasPrefix(ct, "application/connect+"):
		return true
	case r.Header.Get("Connect-Protocol-Version") != "":
		return true
	case r.Method == http.MethodGet && strings.Contains(r.URL.RawQuery, "connect=v1"):
		return r.URL.Query().Get("connect") == "v1"
	}
	return false
}

// maxErrorBody bounds the error body restWriter keeps.
const maxErrorBody = 64 << 10

// restWriter passes successful HTTP/JSON responses through and holds back
// error responses, so that finish can write them in the proxy's own form.
type restWriter struct {
	w     http.ResponseWriter
	r     *http.Request
	state *callState
	// contentType is the request's, kept because the transcoder removes
	// it from the request.
	contentType string
	code        int // 0 until the status is written
	// failed is true once an error status was written; the body is then
	// kept in body instead of sent.
	failed bool
	body   bytes.Buffer
	// dropped takes the transcoder's headers once a stream wrote the
	// response itself (detached).
	dropped http.Header
}

// detached reports whether rpcHandler streams this response itself
// (httpstream.go): what the transcoder writes then goes nowhere.
func (w *restWriter) detached() bool {
	return w.state.rest != nil && w.state.rest.started.Load()
}

func (w *restWriter) Header() http.Header {
	if w.detached() {
		if w.dropped == nil {
			w.dropped = http.Header{}
		}
		return w.dropped
	}
	return w.w.Header()
}

func (w *restWriter) WriteHeader(code int) {
	if w.code != 0 || w.detached() {
		return
	}
	w.code = code
	if code >= 400 {
		w.failed = true
		return
	}
	w.w.WriteHeader(code)
}

func (w *restWriter) Write(p []byte) (int, error) {
	if w.detached() {
		return len(p), nil
	}
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		if w.body.Len() < maxErrorBody {
			w.body.Write(p[:min(len(p), maxErrorBody-w.body.Len())])
		}
		return len(p), nil
	}
	return w.w.Write(p)
}

// Flush sends what was written so far, for streamed HttpBody responses.
func (w *restWriter) Flush() {
	if w.code == 0 || w.failed || !w.state.streaming.Load() || w.detached() {
		return
	}
	if f, ok := w.w.(http.Flusher); ok {
		f.Flush()
	}
}

// restError is the JSON body of every HTTP/JSON error: a google.rpc.Status.
type restError struct {
	Code    codes.Code        `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// finish writes a held-back error response.
func (w *restWriter) finish() {
	if !w.failed || w.detached() {
		return
	}
	h := w.w.Header()
	e := restError{Code: codeForHTTPStatus(w.code)}
	// The transcoder writes a google.rpc.Status in JSON, or plain text.
	if !bytes.HasPrefix(w.body.Bytes(), []byte("{")) || json.Unmarshal(w.body.Bytes(), &e) != nil {
		// A plain-text error of the transcoder.
		e = restError{Code: codeForHTTPStatus(w.code), Message: strings.TrimSpace(w.body.String())}
	}
	switch {
	case w.code == http.StatusMethodNotAllowed:
		e.Message = fmt.Sprintf("method %s is not allowed for %s (allowed: %s)", w.r.Method, w.r.URL.Path, h.Get("Allow"))
	case w.code == http.StatusUnsupportedMediaType && strings.Contains(e.Message, "sub-format not supported"):
		e.Message = fmt.Sprintf("content type %q is not supported here: send application/json", w.contentType)
	case !w.state.reached.Load() && e.Code == codes.ResourceExhausted:
		// A chunked body found too large while reading it.
		w.code = http.StatusRequestEntityTooLarge
	case !w.state.reached.Load() && (e.Code == codes.Unknown || e.Code == codes.Internal):
		// The transcoder failed to build the request (a bad query
		// parameter, say) without classifying the error.
		e.Code, w.code = codes.InvalidArgument, http.StatusBadRequest
	}
	if e.Message == "" {
		e.Message = http.StatusText(w.code)
	}
	// The in-process handler's status headers are not for this client.
	for k := range h {
		if strings.HasPrefix(k, "Grpc-") || strings.HasPrefix(k, http.TrailerPrefix) {
			h.Del(k)
		}
	}
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	if e.Code == codes.Unknown && acceptsPlainText(w.r) {
		// A function's failure: its description alone (HTTP-9).
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w.w, e.Message)
		return
	}
	if e.Details == nil {
		e.Details = []json.RawMessage{}
	}
	body, err := json.Marshal(e)
	if err != nil {
		body = []byte(`{"code":13,"message":"the error could not be encoded","details":[]}`)
	}
	h.Set("Content-Type", "application/json")
	w.w.WriteHeader(w.code)
	w.w.Write(body)
}

// codeForHTTPStatus is the gRPC code of an HTTP error the transcoder wrote
// without one.
func codeForHTTPStatus(code int) codes.Code {
	switch code {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return codes.InvalidArgument
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return codes.Unimplemented
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Unknown
}

// acceptsPlainText reports whether the client takes a text/plain body: it
// sent no Accept, or one that admits text/plain.
func acceptsPlainText(r *http.Request) bool {
	accept := r.Header.Values("Accept")
	if len(accept) == 0 {
		return true
	}
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case "text/plain", "text/*", "*/*":
				return true
			}
		}
	}
	return false
}

// rpcHandler is an in-process gRPC server for the transcoder: it serves
// POST /<service>/<method> with application/grpc+proto bodies (messages
// uncompressed: the transcoder is told not to compress) by calling the
// router with the raw message bytes, and ends every call with grpc-status
// and grpc-message, as headers (trailers-only) or trailers.
type rpcHandler struct {
	router *route.Router
	maxMsg int
	log    *slog.Logger
}

func (h *rpcHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	service, method, _ := splitMethod(r.URL.Path)
	m := h.router.Model().Lookup(service, method)
	if m == nil {
		writeStatus(w.Header(), "", status.New(codes.Unimplemented, "unknown method "+r.URL.Path))
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx := r.Context()
	if t := r.Header.Get("Grpc-Timeout"); t != "" {
		if d, ok := parseGRPCTimeout(t); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	md := httpMetadata(m, r.Header)
	w.Header().Set("Content-Type", "application/grpc+proto")
	state := stateOf(ctx)
	if state.rest != nil && m.ServerStreaming && !m.ClientStreaming {
		h.serveRESTStream(ctx, w, r, m, md, state)
		return
	}
	if m.ClientStreaming || m.ServerStreaming {
		state.streaming.Store(true)
		h.stream(ctx, w, r, m, md, state)
		return
	}
	h.unary(ctx, w, r, m, md, state)
}

func (h *rpcHandler) unary(ctx context.Context, w http.ResponseWriter, r *http.Request, m *discovery.Method, md *protocol.Metadata, state *callState) {
	req, err := readFrame(r.Body, h.maxMsg)
	if errors.Is(err, io.EOF) {
		err = status.Errorf(codes.InvalidArgument, "%s: the request message is missing", m.Path)
	}
	if err != nil {
		writeStatus(w.Header(), "", status.Convert(err))
		w.WriteHeader(http.StatusOK)
		return
	}
	state.reached.Store(true)
	reply, err := h.router.Unary(ctx, m, req, md)
	if err != nil {
		logFailedCall(h.log, ctx, m.Path, err)
		writeStatus(w.Header(), "", status.Convert(err))
		w.WriteHeader(http.StatusOK)
		return
	}
	setReplyHeaders(w.Header(), reply)
	w.WriteHeader(http.StatusOK)
	// No reply still needs a message over these protocols: the empty one.
	if err := writeFrame(w, reply.GetPayload().GetValue()); err != nil {
		h.log.Debug("writing an HTTP response failed", "method", m.Path, "err", err)
		return
	}
	writeStatus(w.Header(), http.TrailerPrefix, nil)
}

func (h *rpcHandler) stream(ctx context.Context, w http.ResponseWriter, r *http.Request, m *discovery.Method, md *protocol.Metadata, state *callState) {
	headerSent := false
	recv := func() ([]byte, error) {
		b, err := readFrame(r.Body, h.maxMsg)
		if err == nil {
			state.reached.Store(true)
		}
		return b, err
	}
	send := func(reply *protocol.Reply) error {
		if !headerSent {
			headerSent = true
			setReplyHeaders(w.Header(), reply)
			w.WriteHeader(http.StatusOK)
		}
		if err := writeFrame(w, reply.GetPayload().GetValue()); err != nil {
			return status.Errorf(codes.Canceled, "client gone: %v", err)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return nil
	}
	err := h.router.Stream(ctx, m, recv, send, md)
	var st *status.Status
	if err != nil {
		logFailedCall(h.log, ctx, m.Path, err)
		st = status.Convert(err)
	}
	if !headerSent {
		writeStatus(w.Header(), "", st)
		w.WriteHeader(http.StatusOK)
		return
	}
	writeStatus(w.Header(), http.TrailerPrefix, st)
}

// readFrame reads one length-prefixed gRPC message; io.EOF means the client
// sent no more messages.
func readFrame(r io.Reader, maxMsg int) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, readError(err)
	}
	if hdr[0] != 0 {
		return nil, status.Error(codes.Internal, "compressed message from the transcoder, which was told not to compress")
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if maxMsg > 0 && int64(n) > int64(maxMsg) {
		return nil, status.Errorf(codes.ResourceExhausted, "request message of %d bytes exceeds the limit of %d bytes", n, maxMsg)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, readError(err)
	}
	return buf, nil
}

// readError is a failure to read the request: its status when the
// transcoder gave it one (a malformed request), else the client went away.
func readError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Canceled, "reading the request: %v", err)
}

func writeFrame(w io.Writer, msg []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(msg)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if len(msg) == 0 {
		return nil
	}
	_, err := w.Write(msg)
	return err
}

// writeStatus sets grpc-status, grpc-message and grpc-status-details-bin
// (st nil means OK) as headers, or as trailers when prefix is
// http.TrailerPrefix.
func writeStatus(h http.Header, prefix string, st *status.Status) {
	if st == nil {
		h.Set(prefix+"Grpc-Status", "0")
		return
	}
	h.Set(prefix+"Grpc-Status", strconv.Itoa(int(st.Code())))
	h.Set(prefix+"Grpc-Message", percentEncode(st.Message()))
	if len(st.Details()) > 0 {
		if b, err := proto.Marshal(st.Proto()); err == nil {
			h.Set(prefix+"Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(b))
		}
	}
}

// percentEncode encodes a grpc-message value: bytes outside printable ASCII,
// and '%', as %XX.
func percentEncode(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			return percentEncodeFrom(s, i)
		}
	}
	return s
}

func percentEncodeFrom(s string, i int) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// setReplyHeaders lifts the string metadata of a reply into response
// headers (ING-5, HTTP-7).
func setReplyHeaders(h http.Header, reply *protocol.Reply) {
	for k, vs := range responseHeaders(reply.GetMetadata()) {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

// skippedRequestHeaders are the headers of the protocols themselves, which
// are not the caller's metadata.
var skippedRequestHeaders = map[string]bool{
	"content-type": true, "content-length": true, "te": true, "connection": true,
	"keep-alive": true, "transfer-encoding": true, "upgrade": true,
	"grpc-timeout": true, "grpc-encoding": true, "grpc-accept-encoding": true,
}

// httpMetadata turns request headers into the call's metadata for actions
// (ING-4, HTTP-6); entity commands never carry metadata (PROTOCOL.md §7.6).
func httpMetadata(m *discovery.Method, h http.Header) *protocol.Metadata {
	if m.Service.EntityType != discovery.Action || len(h) == 0 {
		return nil
	}
	md := &protocol.Metadata{Entries: make([]*protocol.MetadataEntry, 0, len(h))}
	for k, vs := range h {
		k = strings.ToLower(k)
		if skippedRequestHeaders[k] {
			continue
		}
		for _, v := range vs {
			e := &protocol.MetadataEntry{Key: k}
			if strings.HasSuffix(k, "-bin") {
				b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
				if err != nil {
					continue
				}
				e.Value = &protocol.MetadataEntry_BytesValue{BytesValue: b}
			} else {
				e.Value = &protocol.MetadataEntry_StringValue{StringValue: v}
			}
			md.Entries = append(md.Entries, e)
		}
	}
	if len(md.Entries) == 0 {
		return nil
	}
	return md
}

// parseGRPCTimeout parses a grpc-timeout value: up to 8 digits and a unit.
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	unit, ok := units[s[len(s)-1]]
	if !ok {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// corsPolicy answers cross-origin requests from the allowed origins
// (--cors-allowed-origins): preflights directly, others with the headers a
// browser needs to read gRPC-Web, Connect and JSON responses.
type corsPolicy struct {
	anyOrigin bool
	origins   map[string]bool
}

// newCORSPolicy returns the policy for origins ("*" allows any), or nil
// when there are none: CORS stays off.
func newCORSPolicy(origins []string) *corsPolicy {
	if len(origins) == 0 {
		return nil
	}
	p := &corsPolicy{origins: make(map[string]bool)}
	for _, o := range origins {
		if o == "*" {
			p.anyOrigin = true
		}
		p.origins[strings.TrimSuffix(o, "/")] = true
	}
	return p
}

// corsExposedHeaders are the response headers scripts may read: the
// protocols' status and encoding headers.
const corsExposedHeaders = "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Grpc-Encoding, Grpc-Accept-Encoding, " +
	"Connect-Content-Encoding, Connect-Accept-Encoding, Content-Encoding"

func (p *corsPolicy) wrap(next http.Handler) http.Handler {
	if p == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		if !p.anyOrigin && !p.origins[origin] {
			next.ServeHTTP(w, r)
			return
		}
		if p.anyOrigin {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposedHeaders)
		next.ServeHTTP(w, r)
	})
}
