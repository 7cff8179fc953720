package ingress

// Server-streaming methods over HTTP/JSON (BEHAVIOR.md HTTP-8).
//
// The transcoder refuses HTTP/JSON server streams other than HttpBody ones,
// but its request decoding is what they need: the same as for unary methods.
// Reusing it keeps one implementation of HTTP-4 and HTTP-5 (path variables,
// query parameters, body, and the 400s naming the field) instead of a second
// decoder that would have to agree with it on every detail. So every
// HTTP/JSON request goes to a transcoder with the same bindings in which
// server-streaming methods are declared unary
// (httpapi.Options.ServerStreamsAsUnary); routing is the same for all. It
// decodes the request and calls rpcHandler as for a unary call; rpcHandler
// sees from the callState that the request came over HTTP/JSON and, for a
// server-streaming method, calls serveRESTStream, which writes the stream to
// the client's http.ResponseWriter directly (restStream.w). From the first
// byte written on, restWriter drops whatever the transcoder still writes.
//
// The response starts with the first reply: its string metadata become
// headers (HTTP-7), and until then the call can still fail with the error
// response a unary call would get (a status, or 500 with the failure's
// description). A stream that sends nothing therefore sends no headers
// until it ends. The three forms:
//
//   - Accept includes text/event-stream: Server-Sent Events, one
//     "data: <json>" event per message.
//   - the printed output is google.api.HttpBody: its data, raw. The content
//     type is the first reply's content-type metadata, else (as before) the
//     first message's content_type, else application/octet-stream.
//   - otherwise: each message as one line of JSON ending in "\n", with
//     content type application/json as in the reference proxy.
//
// Messages are printed as unary responses are (HTTP-7, response_body of the
// matched binding included), and every message is flushed at once.
//
// An error after the start ends the stream in-band, with the error's
// google.rpc.Status in JSON, {"code":..,"message":..,"details":[..]}: as an
// "event: error" event, or as a last line {"error":{...}}. A raw HttpBody
// stream has no room for it: the response is aborted (the connection is
// cut), so that the client sees a truncated body rather than a complete one.
//
// A client that goes away cancels the request's context, which is the
// call's: the function's side of the stream is cancelled.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/httpapi"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// restStream is an HTTP/JSON request as serveHTTPAPI received it, carried
// past the transcoder to rpcHandler in the callState. Every HTTP/JSON
// request has one, so it only keeps references until a stream needs them.
type restStream struct {
	// w is the client's response, under the transcoder's writer.
	w   http.ResponseWriter
	api *httpapi.API
	// httpMethod and path (escaped) select the binding, for response_body.
	httpMethod, path string
	accept           []string
	// started is set once the stream wrote its response headers.
	started atomic.Bool
	// aborted is set when a raw HttpBody stream failed after the start:
	// serveHTTPAPI then aborts the response.
	aborted atomic.Bool
}

func newRESTStream(w http.ResponseWriter, r *http.Request, api *httpapi.API) *restStream {
	return &restStream{w: w, api: api, httpMethod: r.Method, path: r.URL.Path, accept: r.Header.Values("Accept")}
}

// acceptsEventStream reports whether an Accept header names
// text/event-stream (with a quality other than 0).
func acceptsEventStream(accept []string) bool {
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != "text/event-stream" {
				continue
			}
			if q := strings.TrimSpace(params["q"]); q == "0" || q == "0.0" || q == "0.00" || q == "0.000" {
				continue
			}
			return true
		}
	}
	return false
}

// streamForm is how the messages of a stream are written.
type streamForm int

const (
	formNDJSON streamForm = iota // one JSON object per line
	formSSE                      // one Server-Sent Event per message
	formRaw                      // HttpBody data
)

// restStreamWriter writes one stream to its client.
type restStreamWriter struct {
	rs      *restStream
	rc      *http.ResponseController
	replies *httpapi.Replies
	form    streamForm
	buf     []byte
}

// serveRESTStream serves a server-streaming method to an HTTP/JSON client;
// w and r are the transcoder's, which sees a unary call.
func (h *rpcHandler) serveRESTStream(ctx context.Context, w http.ResponseWriter, r *http.Request, m *discovery.Method, md *protocol.Metadata, state *callState) {
	rs := state.rest
	req, err := readFrame(r.Body, h.maxMsg)
	if errors.Is(err, io.EOF) {
		err = status.Errorf(codes.InvalidArgument, "%s: the request message is missing", m.Path)
	}
	if err != nil {
		writeStatus(w.Header(), "", status.Convert(err))
		w.WriteHeader(http.StatusOK)
		return
	}
	// Read the request to its end: net/http watches the connection, and
	// cancels ctx when the client goes away, only once the body is done.
	_, _ = io.Copy(io.Discard, r.Body)
	state.reached.Store(true)

	replies, err := rs.api.Replies(m.Desc.FullName(), rs.httpMethod, rs.path)
	if err != nil {
		writeStatus(w.Header(), "", status.New(codes.Internal, err.Error()))
		w.WriteHeader(http.StatusOK)
		return
	}
	sw := &restStreamWriter{rs: rs, rc: http.NewResponseController(rs.w), replies: replies}
	switch {
	case acceptsEventStream(rs.accept):
		sw.form = formSSE
	case replies.IsHTTPBody():
		sw.form = formRaw
	}
	taken := false
	recv := func() ([]byte, error) {
		if taken {
			return nil, io.EOF
		}
		taken = true
		return req, nil
	}
	err = h.router.Stream(ctx, m, recv, sw.send, md)
	if err != nil {
		logFailedCall(h.log, ctx, m.Path, err)
	}
	if !rs.started.Load() {
		if err != nil {
			// Nothing sent yet: the transcoder answers as for a unary call.
			writeStatus(w.Header(), "", status.Convert(err))
			w.WriteHeader(http.StatusOK)
			return
		}
		if err := sw.start(nil); err != nil {
			h.log.Debug("writing an HTTP stream failed", "method", m.Path, "err", err)
		}
		return
	}
	if err != nil {
		if werr := sw.fail(status.Convert(err)); werr != nil {
			h.log.Debug("writing the end of an HTTP stream failed", "method", m.Path, "err", werr)
		}
	}
}

// start writes the response headers; first is the first reply, nil for a
// stream without replies.
func (sw *restStreamWriter) start(first *protocol.Reply) error {
	h := sw.rs.w.Header()
	setReplyHeaders(h, first)
	switch sw.form {
	case formSSE:
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
	case formNDJSON:
		h.Set("Content-Type", "application/json")
	case formRaw:
		h.Set("Content-Type", sw.rawContentType(first))
	}
	h.Del("Content-Length")
	sw.rs.started.Store(true)
	sw.rs.w.WriteHeader(http.StatusOK)
	return sw.rc.Flush()
}

// rawContentType is the content type of a raw HttpBody stream (HTTP-8).
func (sw *restStreamWriter) rawContentType(first *protocol.Reply) string {
	for _, e := range first.GetMetadata().GetEntries() {
		if strings.EqualFold(e.GetKey(), "content-type") && e.GetStringValue() != "" {
			return e.GetStringValue()
		}
	}
	if first != nil {
		if ct, _, err := sw.replies.HTTPBody(first.GetPayload().GetValue()); err == nil && ct != "" {
			return ct
		}
	}
	return "application/octet-stream"
}

// send writes one reply and flushes it; an error ends the call.
func (sw *restStreamWriter) send(reply *protocol.Reply) error {
	payload := reply.GetPayload().GetValue()
	b := sw.buf[:0]
	var err error
	switch sw.form {
	case formSSE:
		b = append(b, "data: "...)
		if b, err = sw.replies.AppendJSON(b, payload); err != nil {
			return status.Errorf(codes.Internal, "printing a reply as JSON: %v", err)
		}
		b = append(b, "\n\n"...)
	case formNDJSON:
		if b, err = sw.replies.AppendJSON(b, payload); err != nil {
			return status.Errorf(codes.Internal, "printing a reply as JSON: %v", err)
		}
		b = append(b, '\n')
	case formRaw:
		_, data, err := sw.replies.HTTPBody(payload)
		if err != nil {
			return status.Errorf(codes.Internal, "reading a reply as google.api.HttpBody: %v", err)
		}
		b = append(b, data...)
	}
	sw.buf = b
	if !sw.rs.started.Load() {
		if err := sw.start(reply); err != nil {
			return status.Errorf(codes.Canceled, "client gone: %v", err)
		}
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := sw.rs.w.Write(b); err != nil {
		return status.Errorf(codes.Canceled, "client gone: %v", err)
	}
	if err := sw.rc.Flush(); err != nil {
		return status.Errorf(codes.Canceled, "client gone: %v", err)
	}
	return nil
}

// fail ends a started stream with st.
func (sw *restStreamWriter) fail(st *status.Status) error {
	if sw.form == formRaw {
		sw.rs.aborted.Store(true)
		return nil
	}
	e, err := sw.rs.api.PrintJSON(st.Proto())
	if err != nil {
		// A detail the function's types cannot print: leave the details out.
		e, _ = json.Marshal(restError{Code: st.Code(), Message: st.Message(), Details: []json.RawMessage{}})
	}
	var b []byte
	if sw.form == formSSE {
		b = append(append(append(b, "event: error\ndata: "...), e...), "\n\n"...)
	} else {
		b = append(append(append(b, `{"error":`...), e...), "}\n"...)
	}
	if _, err := sw.rs.w.Write(b); err != nil {
		return err
	}
	return sw.rc.Flush()
}
