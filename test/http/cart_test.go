package httpe2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

const cartService = "com.example.shoppingcart.ShoppingCart"

// call sends one HTTP request and returns the status and body.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func expect(t *testing.T, what string, code int, body string, wantCode int, wantBody string) {
	t.Helper()
	if code != wantCode || body != wantBody {
		t.Fatalf("%s: %d %s\nwant %d %s", what, code, body, wantCode, wantBody)
	}
}

// TestShoppingCart runs the sample behind the real proxy and uses one cart
// over HTTP/JSON, native gRPC, Connect and gRPC-Web: each protocol sees
// what the others did.
func TestShoppingCart(t *testing.T) {
	s := startStack(t)
	code, body := call(t, "POST", s.base+"/cart/bob/items/add", `{"productId":"tea","name":"Tea","quantity":2}`)
	expect(t, "HTTP AddItem", code, body, 200, `{}`)
	code, body = call(t, "POST", s.base+"/cart/bob/items/add", `{"product_id":"milk","name":"Milk","quantity":1}`)
	expect(t, "HTTP AddItem, proto field names", code, body, 200, `{}`)

	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := shoppingcartpb.NewShoppingCartClient(conn)
	ctx := context.Background()
	if _, err := client.AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: "bob", ProductId: "tea", Name: "Tea", Quantity: 3}); err != nil {
		t.Fatalf("gRPC AddItem: %v", err)
	}
	if _, err := client.RemoveItem(ctx, &shoppingcartpb.RemoveLineItem{UserId: "bob", ProductId: "milk"}); err != nil {
		t.Fatalf("gRPC RemoveItem: %v", err)
	}
	code, body = call(t, "GET", s.base+"/carts/bob", "")
	expect(t, "HTTP GetCart after gRPC calls", code, body, 200, `{"items":[{"productId":"tea","name":"Tea","quantity":5}]}`)
	code, body = call(t, "GET", s.base+"/carts/bob/items", "")
	expect(t, "HTTP additional binding with response_body", code, body, 200, `[{"productId":"tea","name":"Tea","quantity":5}]`)

	code, body = call(t, "POST", s.base+"/cart/bob/items/coffee/remove", "")
	expect(t, "HTTP RemoveItem of a missing item", code, body, 500, `Cannot remove item coffee because it is not in the cart`)
	code, body = call(t, "POST", s.base+"/cart/bob/items/tea/remove", "")
	expect(t, "HTTP RemoveItem", code, body, 200, `{}`)
	cart, err := client.GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: "bob"})
	if err != nil || len(cart.GetItems()) != 0 {
		t.Fatalf("gRPC GetCart after the HTTP remove = %v, %v; want an empty cart", cart, err)
	}

	for name, opts := range map[string][]connect.ClientOption{
		"connect":      nil,
		"connect json": {connect.WithProtoJSON()},
		"grpc-web":     {connect.WithGRPCWeb()},
	} {
		add := connect.NewClient[shoppingcartpb.AddLineItem, shoppingcartpb.Cart](http.DefaultClient, s.base+"/"+cartService+"/AddItem", opts...)
		if _, err := add.CallUnary(ctx, connect.NewRequest(&shoppingcartpb.AddLineItem{UserId: "carol", ProductId: name, Quantity: 1})); err != nil {
			t.Fatalf("%s AddItem: %v", name, err)
		}
		_, err = add.CallUnary(ctx, connect.NewRequest(&shoppingcartpb.AddLineItem{UserId: "carol", ProductId: name, Quantity: 0}))
		if connect.CodeOf(err) != connect.CodeUnknown || !strings.HasSuffix(err.Error(), "Cannot add a quantity of 0 of item "+name) {
			t.Fatalf("%s AddItem of nothing = %v, want unknown with the failure's description", name, err)
		}
	}
	cart, err = client.GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	want := &shoppingcartpb.Cart{}
	for _, name := range []string{"connect", "connect json", "grpc-web"} {
		want.Items = append(want.Items, &shoppingcartpb.LineItem{ProductId: name, Quantity: 1})
	}
	// Map iteration order decided the order of the items.
	if len(cart.GetItems()) != 3 {
		t.Fatalf("gRPC GetCart = %v, want %v in some order", cart, want)
	}
	for _, w := range want.Items {
		found := false
		for _, it := range cart.GetItems() {
			found = found || proto.Equal(it, w)
		}
		if !found {
			t.Fatalf("gRPC GetCart = %v, missing %v", cart, w)
		}
	}
}
