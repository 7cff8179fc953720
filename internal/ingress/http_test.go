package ingress

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

const jsonType = "application/json"

func wantResponse(t *testing.T, what string, gotStatus int, gotBody string, wantStatus int, wantBody string) {
	t.Helper()
	if gotStatus != wantStatus || gotBody != wantBody {
		t.Fatalf("%s: %d %s\nwant %d %s", what, gotStatus, gotBody, wantStatus, wantBody)
	}
}

// TestShoppingCartOverHTTP drives the shopping cart's rules: add (JSON and
// original field names), remove, get, the additional binding with
// response_body, a failure, and the same cart seen through native gRPC,
// Connect and gRPC-Web.
func TestShoppingCartOverHTTP(t *testing.T) {
	h := startHTTP(t, Options{})
	code, _, body := h.do(t, "POST", "/cart/alice/items/add", jsonType, `{"productId":"apple","name":"Apple","quantity":3}`)
	wantResponse(t, "add apple", code, body, 200, `{}`)
	code, _, body = h.do(t, "POST", "/cart/alice/items/add", jsonType, `{"product_id":"pear","name":"Pear","quantity":1}`)
	wantResponse(t, "add pear with original field names", code, body, 200, `{}`)
	code, _, body = h.do(t, "POST", "/cart/alice/items/add", jsonType, `{"productId":"apple","quantity":2}`)
	wantResponse(t, "add more apples", code, body, 200, `{}`)

	code, hdr, body := h.do(t, "GET", "/carts/alice", "", "")
	wantResponse(t, "get", code, body, 200, `{"items":[{"productId":"apple","name":"Apple","quantity":5},{"productId":"pear","name":"Pear","quantity":1}]}`)
	if ct := hdr.Get("Content-Type"); ct != jsonType {
		t.Errorf("content type %q, want %s", ct, jsonType)
	}
	code, _, body = h.do(t, "GET", "/carts/alice/items", "", "")
	wantResponse(t, "additional binding with response_body", code, body, 200, `[{"productId":"apple","name":"Apple","quantity":5},{"productId":"pear","name":"Pear","quantity":1}]`)

	code, _, body = h.do(t, "POST", "/cart/alice/items/apple/remove", "", "")
	wantResponse(t, "remove apple", code, body, 200, `{}`)
	code, hdr, body = h.do(t, "POST", "/cart/alice/items/apple/remove", "", "")
	wantResponse(t, "remove apple again", code, body, 500, `Cannot remove item apple because it is not in the cart`)
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("failure content type %q, want text/plain", ct)
	}
	code, _, body = h.do(t, "GET", "/carts/nobody", "", "")
	wantResponse(t, "empty cart", code, body, 200, `{"items":[]}`)

	// The same cart through native gRPC, and an item added over gRPC seen
	// over HTTP.
	client := shoppingcartpb.NewShoppingCartClient(h.conn)
	ctx := context.Background()
	cart, err := client.GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	want := &shoppingcartpb.Cart{Items: []*shoppingcartpb.LineItem{{ProductId: "pear", Name: "Pear", Quantity: 1}}}
	if !proto.Equal(cart, want) {
		t.Fatalf("gRPC GetCart = %v, want %v", cart, want)
	}
	if _, err := client.AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: "alice", ProductId: "fig", Name: "Fig", Quantity: 7}); err != nil {
		t.Fatal(err)
	}
	code, _, body = h.do(t, "GET", "/carts/alice/items", "", "")
	wantResponse(t, "item added over gRPC", code, body, 200, `[{"productId":"pear","name":"Pear","quantity":1},{"productId":"fig","name":"Fig","quantity":7}]`)

	// Connect (proto and JSON) and gRPC-Web clients from connect-go.
	wantCart := &shoppingcartpb.Cart{Items: []*shoppingcartpb.LineItem{{ProductId: "pear", Name: "Pear", Quantity: 1}, {ProductId: "fig", Name: "Fig", Quantity: 7}}}
	for name, opts := range map[string][]connect.ClientOption{
		"connect":      nil,
		"connect json": {connect.WithProtoJSON()},
		"grpc-web":     {connect.WithGRPCWeb()},
	} {
		get := connect.NewClient[shoppingcartpb.GetShoppingCart, shoppingcartpb.Cart](http.DefaultClient, h.base+"/"+cartService+"/GetCart", opts...)
		res, err := get.CallUnary(ctx, connect.NewRequest(&shoppingcartpb.GetShoppingCart{UserId: "alice"}))
		if err != nil {
			t.Fatalf("%s GetCart: %v", name, err)
		}
		if !proto.Equal(res.Msg, wantCart) {
			t.Fatalf("%s GetCart = %v, want %v", name, res.Msg, wantCart)
		}
		add := connect.NewClient[shoppingcartpb.AddLineItem, shoppingcartpb.Cart](http.DefaultClient, h.base+"/"+cartService+"/AddItem", opts...)
		_, err = add.CallUnary(ctx, connect.NewRequest(&shoppingcartpb.AddLineItem{UserId: "alice", ProductId: "x", Quantity: -1}))
		if connect.CodeOf(err) != connect.CodeUnknown || !strings.Contains(err.Error(), "Cannot add a quantity of -1 of item x") {
			t.Fatalf("%s AddItem failure = %v, want unknown: Cannot add a quantity of -1 of item x", name, err)
		}
	}
}

// TestHTTPRuleForms serves every rule form of test.Things; the fake echoes
// the request, so each response shows what the transcoder built from the
// path, the query and the body.
func TestHTTPRuleForms(t *testing.T) {
	h := startHTTP(t, Options{})
	for _, tc := range []struct {
		name, method, path, contentType, body string
		header                                []string
		status                                int
		want                                  string
		wantHeader                            []string // name, value
	}{
		{name: "get with path variable and defaults printed", method: "GET", path: "/things/a", status: 200,
			want: `{"name":"a","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "query parameters by JSON and proto name, repeated, nested", method: "GET",
			path: "/things/a?count=7&flag=true&tags=x&tags=y&display_name=D&inner.id=i&kind=KIND_BIG&nick=n&size=3&when=2024-01-02T03:04:05Z&took=1.5s", status: 200,
			want: `{"name":"a","count":"7","flag":true,"ratio":0,"data":"","inner":{"id":"i","n":0},"tags":["x","y"],"when":"2024-01-02T03:04:05Z","took":"1.500s","nick":"n","size":3,"kind":"KIND_BIG","displayName":"D","labels":{}}`},
		{name: "the path wins over a query parameter naming the same field", method: "GET", path: "/things/a?name=b&inner.id=c", status: 200,
			want: `{"name":"a","count":"0","flag":false,"ratio":0,"data":"","inner":{"id":"c","n":0},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "the path wins over a query parameter naming a nested field by its JSON name", method: "GET", path: "/count/1/true/2/3?inner.n=9&count=4", status: 200,
			want: `{"name":"","count":"1","flag":true,"ratio":2,"data":"","inner":{"id":"","n":3},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "query parameters are ignored with body *", method: "POST", path: "/things?name=q&bogus=1", contentType: jsonType, body: `{"name":"n"}`, status: 200,
			want: `{"name":"n","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "additional binding with nested path variable and message response_body", method: "GET", path: "/things/a/inner/b", status: 200,
			want: `{"id":"b","n":0}`},
		{name: "additional binding with repeated response_body", method: "GET", path: "/things/a/tags?tags=t1&tags=t2", status: 200,
			want: `["t1","t2"]`},
		{name: "post body * with well-known types", method: "POST", path: "/things", contentType: jsonType,
			body:   `{"name":"n","when":"2020-05-06T07:08:09.5Z","took":"3s","meta":{"a":[1,"b",null,true]},"extra":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"},"nick":"nk","size":5,"data":"aGk=","labels":{"k":"v"},"ratio":1.25}`,
			status: 200,
			want:   `{"name":"n","count":"0","flag":false,"ratio":1.25,"data":"aGk=","tags":[],"when":"2020-05-06T07:08:09.500Z","took":"3s","meta":{"a":[1,"b",null,true]},"extra":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"},"nick":"nk","size":5,"kind":"KIND_UNSPECIFIED","displayName":"","labels":{"k":"v"}}`},
		{name: "JSON content type with parameters", method: "POST", path: "/things", contentType: "Application/JSON; Charset=UTF-8", body: `{"name":"c"}`, status: 200,
			want: `{"name":"c","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "put body field, rest from path and query", method: "PUT", path: "/things/p?count=2", contentType: jsonType, body: `{"id":"in","n":4}`, status: 200,
			want: `{"name":"p","count":"2","flag":false,"ratio":0,"data":"","inner":{"id":"in","n":4},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "patch body * with path variable set on top", method: "PATCH", path: "/things/fromPath", contentType: jsonType, body: `{"name":"fromBody","displayName":"d"}`, status: 200,
			want: `{"name":"fromPath","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"d","labels":{}}`},
		{name: "delete with Empty output", method: "DELETE", path: "/things/a", status: 200, want: `{}`},
		{name: "the body of a rule without body is ignored", method: "DELETE", path: "/things/a", contentType: "text/plain", body: "whatever", status: 200, want: `{}`},
		{name: "custom verb", method: "POST", path: "/things/op:cancel", contentType: jsonType, body: `{}`, status: 200,
			want: `{"name":"op","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "custom kind * takes any method", method: "OPTIONS", path: "/any/x", status: 200,
			want: `{"name":"x","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "custom kind * takes GET", method: "GET", path: "/any/y", status: 200,
			want: `{"name":"y","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "rest of path", method: "GET", path: "/files/a/b/c.txt", status: 200,
			want: `{"name":"a/b/c.txt","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "variable with segments", method: "GET", path: "/v1/shelves/1/books/2", status: 200,
			want: `{"name":"shelves/1/books/2","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "typed path variables", method: "GET", path: "/count/-42/true/2.5/9", status: 200,
			want: `{"name":"","count":"-42","flag":true,"ratio":2.5,"data":"","inner":{"id":"","n":9},"tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "percent-encoded path variable keeps its slash", method: "GET", path: "/things/a%2Fb%20c", status: 200,
			want: `{"name":"a/b c","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "percent-encoded percent sign", method: "GET", path: "/things/100%25", status: 200,
			want: `{"name":"100%","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "default binding", method: "POST", path: "/test.Things/Default", contentType: jsonType, body: `{"name":"d"}`, status: 200,
			want: `{"name":"d","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`},
		{name: "HttpBody output", method: "GET", path: "/raw/r1", status: 200, want: "name,r1\n",
			wantHeader: []string{"Content-Type", "text/csv"}},
		{name: "request headers reach actions as metadata, reply metadata becomes headers", method: "GET", path: "/things/m",
			header: []string{"X-Test", "hello"}, status: 200,
			want:       `{"name":"m","count":"0","flag":false,"ratio":0,"data":"","tags":[],"kind":"KIND_UNSPECIFIED","displayName":"","labels":{}}`,
			wantHeader: []string{"X-Echo", "hello"}},
		{name: "server streaming HttpBody streams the chunks", method: "GET", path: "/download/d", status: 200,
			want: "d chunk 0\nd chunk 1\nd chunk 2\n", wantHeader: []string{"Content-Type", "text/plain"}},
		{name: "server streaming JSON streams one object per line (httpstream_test.go has the rest)", method: "GET", path: "/watch/w/inner?inner.id=i", status: 200,
			want: "{\"id\":\"i\",\"n\":0}\n{\"id\":\"i\",\"n\":0}\n{\"id\":\"i\",\"n\":0}\n", wantHeader: []string{"Content-Type", jsonType}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := h.do(t, tc.method, tc.path, tc.contentType, tc.body, tc.header...)
			wantResponse(t, tc.method+" "+tc.path, code, body, tc.status, tc.want)
			for i := 0; i+1 < len(tc.wantHeader); i += 2 {
				if got := hdr.Get(tc.wantHeader[i]); got != tc.wantHeader[i+1] {
					t.Errorf("header %s = %q, want %q", tc.wantHeader[i], got, tc.wantHeader[i+1])
				}
			}
		})
	}
}

// TestHTTPErrors: a gRPC status becomes its HTTP status with a JSON body;
// a function's failure (UNKNOWN) is 500 with the plain description unless
// the client accepts only JSON.
func TestHTTPErrors(t *testing.T) {
	h := startHTTP(t, Options{})
	for _, tc := range []struct {
		name, body, accept string
		status             int
		contentType, want  string
	}{
		{"failure, no Accept", `{"name":"it broke"}`, "", 500, "text/plain; charset=utf-8", "it broke"},
		{"failure, Accept */*", `{"name":"it broke"}`, "*/*", 500, "text/plain; charset=utf-8", "it broke"},
		{"failure, Accept text/plain", `{"name":"it broke"}`, "text/plain", 500, "text/plain; charset=utf-8", "it broke"},
		{"failure, Accept JSON only", `{"name":"it broke"}`, "application/json", 500, jsonType, `{"code":2,"message":"it broke","details":[]}`},
		{"NOT_FOUND", `{"name":"no such thing","count":5}`, "", 404, jsonType, `{"code":5,"message":"no such thing","details":[]}`},
		{"INVALID_ARGUMENT", `{"name":"bad","count":3}`, "", 400, jsonType, `{"code":3,"message":"bad","details":[]}`},
		{"PERMISSION_DENIED", `{"name":"no","count":7}`, "", 403, jsonType, `{"code":7,"message":"no","details":[]}`},
		{"UNAVAILABLE", `{"name":"later","count":14}`, "", 503, jsonType, `{"code":14,"message":"later","details":[]}`},
		{"UNIMPLEMENTED", `{"name":"nope","count":12}`, "", 501, jsonType, `{"code":12,"message":"nope","details":[]}`},
		{"INTERNAL with a non-ASCII message", `{"name":"héllo 100%","count":13}`, "", 500, jsonType, `{"code":13,"message":"héllo 100%","details":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept", tc.accept}
			}
			code, got, body := h.do(t, "POST", "/fail", jsonType, tc.body, hdr...)
			wantResponse(t, "POST /fail", code, body, tc.status, tc.want)
			if ct := got.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("content type %q, want %q", ct, tc.contentType)
			}
			for k := range got {
				if strings.HasPrefix(k, "Grpc-") {
					t.Errorf("gRPC header %s leaked into the HTTP response", k)
				}
			}
		})
	}
}

// TestHTTPBadRequests: requests the proxy cannot transcode are answered
// without calling the function, each with a status and a message naming
// the problem, and the proxy keeps serving.
func TestHTTPBadRequests(t *testing.T) {
	h := startHTTP(t, Options{MaxRecvMsgSize: 64 << 10})
	big := `{"name":"` + strings.Repeat("x", 70<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, contentType, body string
		header                                []string
		chunked                               bool
		status                                int
		want                                  string // substring of the message
	}{
		{name: "malformed JSON", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: `{"productId":`, status: 400, want: "unexpected EOF"},
		{name: "JSON that is not an object", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: `[1]`, status: 400, want: "invalid JSON body: syntax error (line 1:1): unexpected token ["},
		{name: "wrong type", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: `{"quantity":"many"}`, status: 400, want: "invalid value for int32 field quantity"},
		{name: "wrong type, nested", method: "POST", path: "/things", contentType: jsonType, body: `{"inner":{"n":true}}`, status: 400, want: "field n"},
		{name: "out of range", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: `{"quantity":3000000000}`, status: 400, want: "quantity"},
		{name: "bad timestamp", method: "POST", path: "/things", contentType: jsonType, body: `{"when":"yesterday"}`, status: 400, want: "Timestamp"},
		{name: "unknown field", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: `{"colour":"red"}`, status: 400, want: `unknown field "colour"`},
		{name: "unknown query parameter", method: "GET", path: "/carts/u?colour=red", status: 400, want: `"colour"`},
		{name: "one field under both spellings", method: "GET", path: "/things/a?display_name=x&displayName=y", status: 400,
			want: `query parameters "displayName" and "display_name" both set field "display_name"`},
		{name: "query parameter of the wrong type", method: "GET", path: "/things/a?count=many", status: 400, want: `"count"`},
		{name: "path variable of the wrong type", method: "GET", path: "/count/many/true/1/1", status: 400, want: `"count"`},
		{name: "empty path variable", method: "POST", path: "/cart//items/add", contentType: jsonType, body: `{}`, status: 400, want: `path variable "user_id" is empty`},
		{name: "empty trailing path variable", method: "GET", path: "/carts/", status: 400, want: `path variable "user_id" is empty`},
		{name: "empty path variable in the middle", method: "POST", path: "/cart/u/items//remove", status: 400, want: `path variable "product_id" is empty`},
		{name: "number for a string field", method: "POST", path: "/test.Things/Default", contentType: jsonType, body: `{"name":1}`, status: 400, want: "name"},
		{name: "body too large, declared", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: big, status: 413, want: "exceeds the limit of 65536 bytes"},
		{name: "body too large, chunked", method: "POST", path: "/cart/u/items/add", contentType: jsonType, body: big, chunked: true, status: 413, want: "65536"},
		{name: "wrong content type", method: "POST", path: "/cart/u/items/add", contentType: "text/plain", body: `{}`, status: 415, want: `content type "text/plain" is not supported`},
		{name: "JSON in another charset", method: "POST", path: "/cart/u/items/add", contentType: "application/json; charset=latin1", body: `{}`, status: 415, want: "charset=latin1"},
		{name: "form content type", method: "POST", path: "/cart/u/items/add", contentType: "application/x-www-form-urlencoded", body: `a=b`, status: 415, want: "application/x-www-form-urlencoded"},
		{name: "wrong verb", method: "GET", path: "/cart/u/items/add", status: 405, want: "method GET is not allowed for /cart/u/items/add (allowed: POST)"},
		{name: "wrong verb on a GET route", method: "DELETE", path: "/carts/u", status: 405, want: "allowed: GET"},
		{name: "unknown path", method: "GET", path: "/nowhere", status: 404, want: "no route for GET /nowhere"},
		{name: "unknown custom verb", method: "POST", path: "/things/op:explode", contentType: jsonType, body: `{}`, status: 404, want: "no route"},
		{name: "gRPC over HTTP/1.1", method: "POST", path: "/" + cartService + "/GetCart", contentType: "application/grpc", body: "\x00\x00\x00\x00\x00", status: 505, want: ""},
		{name: "Connect with bad JSON", method: "POST", path: "/" + cartService + "/AddItem", contentType: jsonType, body: `{"userId":`,
			header: []string{"Connect-Protocol-Version", "1"}, status: 400, want: `"code":"invalid_argument"`},
		{name: "Connect to an unknown method", method: "POST", path: "/" + cartService + "/Checkout", contentType: jsonType, body: `{}`,
			header: []string{"Connect-Protocol-Version", "1"}, status: 404, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.carts.calls.Load() + h.things.calls.Load()
			req, err := http.NewRequest(tc.method, h.base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.chunked {
				req.ContentLength = -1
				req.Body = io.NopCloser(strings.NewReader(tc.body))
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			for i := 0; i+1 < len(tc.header); i += 2 {
				req.Header.Set(tc.header[i], tc.header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			if tc.header == nil && tc.contentType != "application/grpc" {
				var e struct {
					Code    *int             `json:"code"`
					Message string           `json:"message"`
					Details []map[string]any `json:"details"`
				}
				if err := json.Unmarshal(b, &e); err != nil || e.Code == nil || e.Message == "" || e.Details == nil {
					t.Fatalf("error body %s is not {code, message, details}", body)
				}
				body = e.Message
			}
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("%s %s: %d %s\nwant %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.want)
			}
			if after := h.carts.calls.Load() + h.things.calls.Load(); after != before {
				t.Errorf("the function was called %d times for a bad request", after-before)
			}
		})
	}
	// Still serving.
	code, _, body := h.do(t, "POST", "/cart/u/items/add", jsonType, `{"productId":"p","quantity":1}`)
	wantResponse(t, "add after bad requests", code, body, 200, `{}`)
	code, _, body = h.do(t, "GET", "/carts/u", "", "")
	wantResponse(t, "get after bad requests", code, body, 200, `{"items":[{"productId":"p","name":"","quantity":1}]}`)
}

// frame returns one length-prefixed message with the given flags.
func frame(flags byte, msg []byte) []byte {
	b := make([]byte, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	copy(b[5:], msg)
	return b
}

// frames splits a body into its length-prefixed frames.
func frames(t *testing.T, b []byte) (flags []byte, msgs [][]byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("truncated frame header %q", b)
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if len(b) < 5+n {
			t.Fatalf("truncated frame: want %d bytes, have %d", n, len(b)-5)
		}
		flags = append(flags, b[0])
		msgs = append(msgs, b[5:5+n])
		b = b[5+n:]
	}
	return flags, msgs
}

// TestStreamingOverConnectAndGRPCWeb runs server, client and bidirectional
// streams with hand-made frames.
func TestStreamingOverConnectAndGRPCWeb(t *testing.T) {
	h := startHTTP(t, Options{})
	post := func(path, contentType string, body []byte) (int, http.Header, []byte) {
		t.Helper()
		resp, err := http.Post(h.base+path, contentType, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, b
	}

	t.Run("Connect server stream", func(t *testing.T) {
		code, _, body := post("/test.Things/Watch", "application/connect+json", frame(0, []byte(`{"name":"w"}`)))
		flags, msgs := frames(t, body)
		if code != 200 || len(msgs) != 4 || flags[3] != 2 {
			t.Fatalf("%d, frames %q with flags %v; want 3 messages and an end-stream frame", code, msgs, flags)
		}
		for i, want := range []string{"w-0", "w-1", "w-2"} {
			if !strings.Contains(string(msgs[i]), `"name":"`+want+`"`) {
				t.Errorf("message %d = %s, want name %s", i, msgs[i], want)
			}
		}
		if strings.TrimSpace(string(msgs[3])) != `{}` {
			t.Errorf("end-stream %s, want {}", msgs[3])
		}
	})
	t.Run("Connect client stream", func(t *testing.T) {
		var req []byte
		for _, n := range []string{"a", "b", "c"} {
			req = append(req, frame(0, []byte(`{"name":"`+n+`"}`))...)
		}
		code, _, body := post("/test.Things/Collect", "application/connect+json", req)
		_, msgs := frames(t, body)
		if code != 200 || len(msgs) != 2 || !strings.Contains(string(msgs[0]), `"name":"a+b+c"`) {
			t.Fatalf("%d, frames %q; want one message named a+b+c and an end-stream frame", code, msgs)
		}
	})
	t.Run("gRPC-Web server stream", func(t *testing.T) {
		code, hdr, body := post("/test.Things/Watch", "application/grpc-web+json", frame(0, []byte(`{"name":"g"}`)))
		flags, msgs := frames(t, body)
		if code != 200 || len(msgs) != 4 || flags[3] != 0x80 {
			t.Fatalf("%d, frames %q with flags %v; want 3 messages and a trailer frame", code, msgs, flags)
		}
		if got := hdr.Get("Content-Type"); got != "application/grpc-web+json" {
			t.Errorf("content type %q, want the request's", got)
		}
		if !strings.Contains(string(msgs[3]), "grpc-status: 0\r\n") {
			t.Errorf("trailer frame %q, want lower-case grpc-status: 0", msgs[3])
		}
	})
	t.Run("gRPC-Web stream failure", func(t *testing.T) {
		_, _, body := post("/test.Things/Watch", "application/grpc-web+json", frame(0, []byte(`{"name":"fail"}`)))
		flags, msgs := frames(t, body)
		if len(msgs) != 2 || flags[1] != 0x80 || !strings.Contains(string(msgs[0]), `"name":"fail-0"`) {
			t.Fatalf("frames %q flags %v, want one message then the trailer", msgs, flags)
		}
		last := string(msgs[1])
		if !strings.Contains(last, "grpc-status: 2\r\n") || !strings.Contains(last, "grpc-message: watch failed\r\n") {
			t.Fatalf("trailer %q, want UNKNOWN with the failure's description", last)
		}
	})
	t.Run("gRPC-Web text", func(t *testing.T) {
		req := base64.StdEncoding.EncodeToString(frame(0, mustMarshal(t, &shoppingcartpb.GetShoppingCart{UserId: "nobody"})))
		code, hdr, body := post("/"+cartService+"/GetCart", "application/grpc-web-text", []byte(req))
		if code != 200 || hdr.Get("Content-Type") != "application/grpc-web-text" {
			t.Fatalf("%d %s %q", code, hdr.Get("Content-Type"), body)
		}
		// Padded chunks may follow each other; decode them one by one.
		var raw []byte
		for _, chunk := range splitBase64(string(body)) {
			b, err := base64.StdEncoding.DecodeString(chunk)
			if err != nil {
				t.Fatalf("response %q is not base64: %v", body, err)
			}
			raw = append(raw, b...)
		}
		flags, msgs := frames(t, raw)
		if len(msgs) != 2 || flags[1] != 0x80 || !strings.Contains(string(msgs[1]), "grpc-status: 0") {
			t.Fatalf("frames %q flags %v", msgs, flags)
		}
	})
	t.Run("bidirectional stream over HTTP/1.1 is refused", func(t *testing.T) {
		code, _, _ := post("/test.Things/Chat", "application/connect+json", frame(0, []byte(`{"name":"x"}`)))
		if code != http.StatusHTTPVersionNotSupported {
			t.Fatalf("status %d, want 505: bidirectional streams need HTTP/2", code)
		}
	})
}

// splitBase64 splits concatenated padded base64 chunks.
func splitBase64(s string) []string {
	var out []string
	for len(s) > 0 {
		i := strings.Index(s, "=")
		if i < 0 {
			return append(out, s)
		}
		end := i + 1
		for end < len(s) && s[end] == '=' {
			end++
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	return out
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNativeGRPCUnaffected: the native gRPC path still reports its own
// statuses (the HTTP side must not change it).
func TestNativeGRPCUnaffected(t *testing.T) {
	h := startHTTP(t, Options{})
	client := shoppingcartpb.NewShoppingCartClient(h.conn)
	_, err := client.AddItem(context.Background(), &shoppingcartpb.AddLineItem{UserId: "u", Quantity: 0})
	if status.Code(err) != codes.Unknown || status.Convert(err).Message() != "Cannot add a quantity of 0 of item " {
		t.Fatalf("AddItem = %v, want UNKNOWN with the failure's description", err)
	}
	_, err = client.GetCart(context.Background(), &shoppingcartpb.GetShoppingCart{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetCart without a user = %v, want INVALID_ARGUMENT", err)
	}
}

func TestCORS(t *testing.T) {
	preflight := func(h *httpHarness, origin string) http.Header {
		t.Helper()
		req, _ := http.NewRequest("OPTIONS", h.base+"/"+cartService+"/GetCart", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,connect-protocol-version")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header
	}
	t.Run("off by default", func(t *testing.T) {
		h := startHTTP(t, Options{})
		if got := preflight(h, "http://a.example").Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Access-Control-Allow-Origin %q with CORS off", got)
		}
	})
	t.Run("listed origins", func(t *testing.T) {
		h := startHTTP(t, Options{CORSAllowedOrigins: []string{"http://a.example", "http://b.example:8080/"}})
		hdr := preflight(h, "http://b.example:8080")
		if hdr.Get("Access-Control-Allow-Origin") != "http://b.example:8080" ||
			hdr.Get("Access-Control-Allow-Headers") != "content-type,connect-protocol-version" ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "POST") {
			t.Fatalf("preflight headers %v", hdr)
		}
		if got := preflight(h, "http://evil.example").Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Access-Control-Allow-Origin %q for an origin not listed", got)
		}
		code, hdr, body := h.do(t, "GET", "/carts/u", "", "", "Origin", "http://a.example")
		if code != 200 || hdr.Get("Access-Control-Allow-Origin") != "http://a.example" || !strings.Contains(hdr.Get("Access-Control-Expose-Headers"), "Grpc-Status") {
			t.Fatalf("%d %s with headers %v", code, body, hdr)
		}
	})
	t.Run("any origin", func(t *testing.T) {
		h := startHTTP(t, Options{CORSAllowedOrigins: []string{"*"}})
		if got := preflight(h, "http://whoever.example").Get("Access-Control-Allow-Origin"); got != "*" {
			t.Fatalf("Access-Control-Allow-Origin %q, want *", got)
		}
	})
}

// TestHTTPBeforeDiscovery: until the router is set the HTTP side answers
// 503 and the probes keep working.
func TestHTTPBeforeDiscovery(t *testing.T) {
	srv := New(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	handler := srv.httpHandler()
	for _, tc := range []struct {
		method, path string
		header       []string
		status       int
		want         string
	}{
		{"GET", "/carts/u", nil, 503, "the proxy is not ready"},
		{"POST", "/" + cartService + "/GetCart", nil, 503, "the proxy is not ready"},
		{"GET", "/live", nil, 200, "ok"},
		{"GET", "/alive", nil, 200, "ok"},
		{"GET", "/ready", nil, 503, "not ready"},
		{"GET", "/anything", []string{"K-Network-Probe", "queue"}, 200, "queue"},
		{"GET", "/anything", []string{"K-Network-Probe", "other"}, 400, "unexpected probe header value: other"},
	} {
		req, _ := http.NewRequest(tc.method, "http://proxy"+tc.path, nil)
		for i := 0; i+1 < len(tc.header); i += 2 {
			req.Header.Set(tc.header[i], tc.header[i+1])
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.status, tc.want)
		}
	}
}

// TestHTTPFailedCallsLogged: a call over HTTP/JSON that the function fails
// gets the same log line as a failed native gRPC call.
func TestHTTPFailedCallsLogged(t *testing.T) {
	var logs testproc.LogBuffer
	h := startHTTP(t, Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	code, _, _ := h.do(t, "POST", "/cart/u/items/add", jsonType, `{"productId":"p","quantity":-1}`)
	if code != 500 {
		t.Fatalf("status %d, want 500", code)
	}
	code, _, _ = h.do(t, "GET", "/watch/failfirst", "", "")
	if code != 500 {
		t.Fatalf("stream: status %d, want 500", code)
	}
	out := logs.String()
	for _, want := range []string{
		`msg="call failed" method=/` + cartService + `/AddItem code=Unknown message="Cannot add a quantity of -1 of item p"`,
		`msg="call failed" method=/test.Things/Watch code=Unknown message="watch failed first"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s\nlog:\n%s", want, out)
		}
	}
}
