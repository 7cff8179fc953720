package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

// cartClient wraps the generated client with test-failing helpers.
type cartClient struct {
	t *testing.T
	c pb.ShoppingCartClient
}

func newCartClient(t *testing.T, conn *grpc.ClientConn) cartClient {
	return cartClient{t: t, c: pb.NewShoppingCartClient(conn)}
}

func (c cartClient) add(user, product string, qty int32) {
	c.t.Helper()
	if _, err := c.c.AddItem(callCtx(c.t), &pb.AddLineItem{UserId: user, ProductId: product, Name: strings.ToUpper(product), Quantity: qty}); err != nil {
		c.t.Fatalf("AddItem(%s, %s, %d): %v", user, product, qty, err)
	}
}

func (c cartClient) get(user string) *pb.Cart {
	c.t.Helper()
	cart, err := c.c.GetCart(callCtx(c.t), &pb.GetShoppingCart{UserId: user})
	if err != nil {
		c.t.Fatalf("GetCart(%s): %v", user, err)
	}
	return cart
}

// items returns the cart's quantities by product.
func items(cart *pb.Cart) map[string]int32 {
	m := make(map[string]int32)
	for _, it := range cart.GetItems() {
		m[it.GetProductId()] = it.GetQuantity()
	}
	return m
}

// wantCart fails unless the cart holds exactly want, in this order.
func wantCart(t *testing.T, got *pb.Cart, want ...*pb.LineItem) {
	t.Helper()
	if !proto.Equal(got, &pb.Cart{Items: want}) {
		t.Fatalf("cart = %v, want %v", got, &pb.Cart{Items: want})
	}
}

func item(product string, qty int32) *pb.LineItem {
	return &pb.LineItem{ProductId: product, Name: strings.ToUpper(product), Quantity: qty}
}

func wantStatus(t *testing.T, err error, code codes.Code, msgContains string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), msgContains) {
		t.Fatalf("got error %v, want status %s with a message containing %q", err, code, msgContains)
	}
}

func TestCartAddRemoveGet(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)
	cart := newCartClient(t, s.conn)

	wantCart(t, cart.get("alice"))
	cart.add("alice", "apple", 2)
	cart.add("alice", "pear", 1)
	cart.add("alice", "apple", 3)
	cart.add("bob", "fig", 7)
	wantCart(t, cart.get("alice"), item("apple", 5), item("pear", 1))

	if _, err := cart.c.RemoveItem(callCtx(t), &pb.RemoveLineItem{UserId: "alice", ProductId: "apple"}); err != nil {
		t.Fatalf("RemoveItem: %v", err)
	}
	wantCart(t, cart.get("alice"), item("pear", 1))

	// Removing what is not there is the function's failure: UNKNOWN with
	// its own message, and the cart does not change.
	_, err := cart.c.RemoveItem(callCtx(t), &pb.RemoveLineItem{UserId: "alice", ProductId: "kiwi"})
	wantStatus(t, err, codes.Unknown, "Cannot remove item kiwi because it is not in the cart")
	if st := status.Convert(err); st.Message() != "Cannot remove item kiwi because it is not in the cart" {
		t.Errorf("failure message = %q, want the function's description exactly", st.Message())
	}
	wantCart(t, cart.get("alice"), item("pear", 1))

	_, err = cart.c.AddItem(callCtx(t), &pb.AddLineItem{UserId: "alice", ProductId: "plum", Name: "PLUM", Quantity: 0})
	wantStatus(t, err, codes.Unknown, "Cannot add a quantity of 0 of item plum")
	_, err = cart.c.AddItem(callCtx(t), &pb.AddLineItem{UserId: "alice", ProductId: "plum", Name: "PLUM", Quantity: -4})
	wantStatus(t, err, codes.Unknown, "Cannot add a quantity of -4")
	wantCart(t, cart.get("alice"), item("pear", 1))
	wantCart(t, cart.get("bob"), item("fig", 7))
}

// TestCartPassivationAndSnapshots adds 23 items (4 snapshots and 3 events
// after the last), lets the proxy passivate the cart, and checks the state
// is exact; then restarts the function, so a fresh process must rebuild the
// cart from the proxy's snapshot and journal alone.
func TestCartPassivationAndSnapshots(t *testing.T) {
	t.Parallel()
	const passivation = 200 * time.Millisecond
	s := startStack(t, bins.shoppingcart, "--passivation-timeout", passivation.String())
	cart := newCartClient(t, s.conn)

	want := map[string]int32{}
	var order []string
	for i := range 23 {
		product := fmt.Sprintf("p%d", i%7)
		qty := int32(i + 1)
		cart.add("carol", product, qty)
		if _, ok := want[product]; !ok {
			order = append(order, product)
		}
		want[product] += qty
	}
	cart.add("dave", "x", 1)
	var wantItems []*pb.LineItem
	for _, p := range order {
		wantItems = append(wantItems, item(p, want[p]))
	}

	// Each poll comes after the cart was idle longer than the passivation
	// timeout, so it is served by a new activation (TestProxyPassivationTimeout
	// shows the same flag passivating a Counter). Two such reads must agree.
	reads := 0
	testproc.EventuallyEvery(t, 5*time.Second, passivation+100*time.Millisecond, func() error {
		reads++
		wantCart(t, cart.get("carol"), wantItems...)
		if reads < 2 {
			return fmt.Errorf("only %d read(s) after idling", reads)
		}
		return nil
	})

	// A new function process knows nothing: the state comes from the store.
	if !s.fn.Stop(10 * time.Second) {
		t.Fatal("shopping cart did not stop on SIGTERM")
	}
	s.fn = startFunction(t, bins.shoppingcart, s.fnPort)
	testproc.Eventually(t, 10*time.Second, func() error {
		got, err := cart.c.GetCart(callCtx(t), &pb.GetShoppingCart{UserId: "carol"})
		if err != nil {
			return err
		}
		if !proto.Equal(got, &pb.Cart{Items: wantItems}) {
			t.Fatalf("cart after function restart = %v, want %v", got, wantItems)
		}
		return nil
	})
	wantCart(t, cart.get("dave"), item("x", 1))
	cart.add("carol", "p0", 1)
	want["p0"]++
	if got := items(cart.get("carol")); !maps.Equal(got, want) {
		t.Fatalf("cart after one more add = %v, want %v", got, want)
	}
}

// TestCartConcurrent makes 200 concurrent calls over 50 carts; every cart
// must end with exactly the sum of what was added to it.
func TestCartConcurrent(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)
	client := pb.NewShoppingCartClient(s.conn)

	const calls, carts = 200, 50
	want := make([]map[string]int32, carts)
	for i := range want {
		want[i] = map[string]int32{}
	}
	type req struct {
		user, product string
		qty           int32
	}
	reqs := make([]req, calls)
	for i := range reqs {
		c := i % carts
		r := req{user: fmt.Sprintf("user-%d", c), product: fmt.Sprintf("prod-%d", i%3), qty: int32(i%5 + 1)}
		reqs[i] = r
		want[c][r.product] += r.qty
	}

	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for _, r := range reqs {
		wg.Go(func() {
			_, err := client.AddItem(callCtx(t), &pb.AddLineItem{UserId: r.user, ProductId: r.product, Name: r.product, Quantity: r.qty})
			if err != nil {
				errs <- fmt.Errorf("AddItem(%s, %s): %w", r.user, r.product, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for c := range carts {
		cart, err := client.GetCart(callCtx(t), &pb.GetShoppingCart{UserId: fmt.Sprintf("user-%d", c)})
		if err != nil {
			t.Fatalf("GetCart(user-%d): %v", c, err)
		}
		if got := items(cart); !maps.Equal(got, want[c]) {
			t.Errorf("cart user-%d = %v, want %v", c, got, want[c])
		}
	}
}

// rawCodec sends and receives message bytes as they are, so a test can put
// arbitrary bytes on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// Name is "proto" so the content type stays application/grpc+proto.
func (rawCodec) Name() string { return "proto" }

func TestBadRequests(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)
	cart := newCartClient(t, s.conn)

	garbage := map[string][]byte{
		"truncated string":  {0x0a, 0x05, 'a'},
		"unterminated int":  {0x20, 0xff, 0xff},
		"bad wire type":     {0x0f},
		"field number zero": {0x02, 0x00},
		"all 0xff":          {0xff, 0xff, 0xff, 0xff},
	}
	for _, name := range slices.Sorted(maps.Keys(garbage)) {
		in := garbage[name]
		var out []byte
		err := s.conn.Invoke(callCtx(t), "/com.example.shoppingcart.ShoppingCart/AddItem", &in, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s payload % x: got %v, want INVALID_ARGUMENT", name, in, err)
		}
	}
	// The proxy still serves.
	cart.add("erin", "apple", 1)
	wantCart(t, cart.get("erin"), item("apple", 1))

	_, err := cart.c.AddItem(callCtx(t), &pb.AddLineItem{UserId: "", ProductId: "apple", Name: "APPLE", Quantity: 1})
	wantStatus(t, err, codes.InvalidArgument, "")
	_, err = cart.c.GetCart(callCtx(t), &pb.GetShoppingCart{})
	wantStatus(t, err, codes.InvalidArgument, "")

	var out []byte
	empty := []byte{}
	err = s.conn.Invoke(callCtx(t), "/com.example.shoppingcart.ShoppingCart/Checkout", &empty, &out, grpc.ForceCodec(rawCodec{}))
	wantStatus(t, err, codes.Unimplemented, "")
	err = s.conn.Invoke(callCtx(t), "/com.example.NoSuchService/AddItem", &empty, &out, grpc.ForceCodec(rawCodec{}))
	wantStatus(t, err, codes.Unimplemented, "")

	cart.add("erin", "apple", 1)
	wantCart(t, cart.get("erin"), item("apple", 2))
}
