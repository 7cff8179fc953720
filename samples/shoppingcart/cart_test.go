package main

import (
	"fmt"
	"testing"

	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

const user = "user-1"

func newCart(t *testing.T, opts ...testkit.Option) *testkit.EventSourced[Cart] {
	t.Helper()
	c, err := testkit.NewEventSourced(NewEntity(), user, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func add(t *testing.T, c *testkit.EventSourced[Cart], productID, name string, quantity int32) *testkit.Result[*emptypb.Empty] {
	t.Helper()
	res, err := testkit.Call[*emptypb.Empty](c, "AddItem", &pb.AddLineItem{UserId: user, ProductId: productID, Name: name, Quantity: quantity})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func remove(t *testing.T, c *testkit.EventSourced[Cart], productID string) *testkit.Result[*emptypb.Empty] {
	t.Helper()
	res, err := testkit.Call[*emptypb.Empty](c, "RemoveItem", &pb.RemoveLineItem{UserId: user, ProductId: productID})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func fetchCart(t *testing.T, c *testkit.EventSourced[Cart]) *pb.Cart {
	t.Helper()
	res, err := testkit.Call[*pb.Cart](c, "GetCart", &pb.GetShoppingCart{UserId: user})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil || len(res.Events) != 0 {
		t.Fatalf("GetCart: failure %v, events %v", res.Failure, res.Events)
	}
	return res.Reply
}

func item(productID, name string, quantity int32) *pb.LineItem {
	return &pb.LineItem{ProductId: productID, Name: name, Quantity: quantity}
}

func expectCart(t *testing.T, c *testkit.EventSourced[Cart], items ...*pb.LineItem) {
	t.Helper()
	want := &pb.Cart{Items: items}
	if got := fetchCart(t, c); !proto.Equal(got, want) {
		t.Fatalf("cart\n got: %v\nwant: %v", prototext.Format(got), prototext.Format(want))
	}
}

func expectEvents(t *testing.T, got []proto.Message, want ...proto.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("event %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestAddItem(t *testing.T) {
	c := newCart(t)
	res := add(t, c, "apple", "Apple", 2)
	if res.Failure != nil || res.Reply == nil {
		t.Fatalf("AddItem: %+v", res)
	}
	expectEvents(t, res.Events, &pb.ItemAdded{Item: item("apple", "Apple", 2)})
	expectCart(t, c, item("apple", "Apple", 2))
}

func TestAddExistingItemAddsQuantity(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 2)
	add(t, c, "pear", "Pear", 1)
	res := add(t, c, "apple", "Apple", 3)
	expectEvents(t, res.Events, &pb.ItemAdded{Item: item("apple", "Apple", 3)})
	expectCart(t, c, item("apple", "Apple", 5), item("pear", "Pear", 1))
}

func TestAddNonPositiveQuantityFails(t *testing.T) {
	for _, q := range []int32{0, -1} {
		c := newCart(t)
		add(t, c, "apple", "Apple", 1)
		res := add(t, c, "pear", "Pear", q)
		want := &testkit.Failure{Description: fmt.Sprintf("Cannot add a quantity of %d of item pear", q)}
		if res.Failure == nil || *res.Failure != *want {
			t.Fatalf("quantity %d: failure %+v, want %+v", q, res.Failure, want)
		}
		expectEvents(t, res.Events)
		expectCart(t, c, item("apple", "Apple", 1))
	}
}

func TestRemoveItem(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	add(t, c, "pear", "Pear", 2)
	add(t, c, "plum", "Plum", 3)
	res := remove(t, c, "pear")
	if res.Failure != nil {
		t.Fatalf("RemoveItem: %+v", res.Failure)
	}
	expectEvents(t, res.Events, &pb.ItemRemoved{ProductId: "pear"})
	expectCart(t, c, item("apple", "Apple", 1), item("plum", "Plum", 3))
}

func TestRemoveMissingItemFails(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	res := remove(t, c, "pear")
	want := testkit.Failure{Description: "Cannot remove item pear because it is not in the cart"}
	if res.Failure == nil || *res.Failure != want {
		t.Fatalf("failure %+v, want %+v", res.Failure, want)
	}
	expectEvents(t, res.Events)
	expectCart(t, c, item("apple", "Apple", 1))
	if c.Sequence() != 1 {
		t.Fatalf("journal has %d events, want 1", c.Sequence())
	}
}

func TestGetCartKeepsInsertionOrder(t *testing.T) {
	c := newCart(t)
	expectCart(t, c)
	for _, p := range []string{"c", "a", "b"} {
		add(t, c, p, "Product "+p, 1)
	}
	remove(t, c, "a")
	add(t, c, "a", "Product a", 4)
	add(t, c, "c", "Product c", 1)
	expectCart(t, c, item("c", "Product c", 2), item("b", "Product b", 1), item("a", "Product a", 4))
}

func TestSnapshotEveryFiveEventsAndReplay(t *testing.T) {
	c := newCart(t)
	for i, p := range []string{"a", "b", "c", "d"} {
		if res := add(t, c, p, p, int32(i+1)); res.Snapshot != nil {
			t.Fatalf("snapshot after %d events", i+1)
		}
	}
	res := remove(t, c, "b") // event 5
	wantSnap := &pb.CartState{Items: []*pb.LineItem{item("a", "a", 1), item("c", "c", 3), item("d", "d", 4)}}
	if !proto.Equal(res.Snapshot, wantSnap) {
		t.Fatalf("snapshot %v, want %v", res.Snapshot, wantSnap)
	}
	add(t, c, "e", "e", 5) // event 6, after the snapshot

	// Passivate and reactivate: snapshot 5 plus event 6.
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	want := []*pb.LineItem{item("a", "a", 1), item("c", "c", 3), item("d", "d", 4), item("e", "e", 5)}
	expectCart(t, c, want...)

	// The same cart rebuilt by replaying every event from scratch.
	events, err := c.Events()
	if err != nil {
		t.Fatal(err)
	}
	replayed := newCart(t, testkit.WithEvents(events...))
	expectCart(t, replayed, want...)

	// And from the snapshot alone plus the later event.
	fromSnapshot := newCart(t, testkit.WithSnapshot(5, wantSnap), testkit.WithEvents(&pb.ItemAdded{Item: item("e", "e", 5)}))
	expectCart(t, fromSnapshot, want...)
}
