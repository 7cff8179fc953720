package cart_test

import (
	"fmt"
	"testing"

	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	pb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

const user = "user-1"

type testCart = testkit.ValueEntity[*pb.Cart]

func newCart(t *testing.T, opts ...testkit.Option) *testCart {
	t.Helper()
	c, err := testkit.NewValueEntity(cart.New(), user, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func add(t *testing.T, c *testCart, productID, name string, quantity int32) *testkit.ValueResult[*emptypb.Empty] {
	t.Helper()
	res, err := testkit.CallValue[*emptypb.Empty](c, "AddItem", &pb.AddLineItem{UserId: user, ProductId: productID, Name: name, Quantity: quantity})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func remove(t *testing.T, c *testCart, productID string) *testkit.ValueResult[*emptypb.Empty] {
	t.Helper()
	res, err := testkit.CallValue[*emptypb.Empty](c, "RemoveItem", &pb.RemoveLineItem{UserId: user, ProductId: productID})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func item(productID, name string, quantity int32) *pb.LineItem {
	return &pb.LineItem{ProductId: productID, Name: name, Quantity: quantity}
}

// expectCart checks GetCart's reply and the stored value.
func expectCart(t *testing.T, c *testCart, items ...*pb.LineItem) {
	t.Helper()
	res, err := testkit.CallValue[*pb.Cart](c, "GetCart", &pb.GetShoppingCart{UserId: user})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil || res.Updated != nil || res.Deleted {
		t.Fatalf("GetCart changed the cart or failed: %+v", res)
	}
	want := &pb.Cart{Items: items}
	if !proto.Equal(res.Reply, want) {
		t.Fatalf("cart\n got: %v\nwant: %v", prototext.Format(res.Reply), prototext.Format(want))
	}
}

// expectStored checks what the proxy would have stored (nil: nothing).
func expectStored(t *testing.T, c *testCart, want *pb.Cart) {
	t.Helper()
	got, ok, err := c.Stored()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case want == nil && ok:
		t.Fatalf("stored %v, want nothing", prototext.Format(got))
	case want != nil && (!ok || !proto.Equal(got, want)):
		t.Fatalf("stored %v, want %v", prototext.Format(got), prototext.Format(want))
	}
}

func TestAddItem(t *testing.T) {
	c := newCart(t)
	expectStored(t, c, nil)
	res := add(t, c, "apple", "Apple", 2)
	want := &pb.Cart{Items: []*pb.LineItem{item("apple", "Apple", 2)}}
	if res.Failure != nil || res.Reply == nil || !proto.Equal(res.Updated, want) {
		t.Fatalf("AddItem: %+v", res)
	}
	expectStored(t, c, want)
	expectCart(t, c, item("apple", "Apple", 2))
}

func TestAddExistingItemAddsQuantity(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 2)
	add(t, c, "pear", "Pear", 1)
	add(t, c, "apple", "Apple", 3)
	expectCart(t, c, item("apple", "Apple", 5), item("pear", "Pear", 1))
}

func TestAddNonPositiveQuantityFails(t *testing.T) {
	for _, q := range []int32{0, -1} {
		c := newCart(t)
		add(t, c, "apple", "Apple", 1)
		res := add(t, c, "pear", "Pear", q)
		want := testkit.Failure{Description: fmt.Sprintf("Cannot add a quantity of %d of item pear", q)}
		if res.Failure == nil || *res.Failure != want || res.Updated != nil {
			t.Fatalf("quantity %d: %+v, want failure %+v", q, res, want)
		}
		expectCart(t, c, item("apple", "Apple", 1))
	}
}

func TestRemoveItem(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	add(t, c, "pear", "Pear", 2)
	add(t, c, "plum", "Plum", 3)
	res := remove(t, c, "pear")
	want := &pb.Cart{Items: []*pb.LineItem{item("apple", "Apple", 1), item("plum", "Plum", 3)}}
	if res.Failure != nil || !proto.Equal(res.Updated, want) {
		t.Fatalf("RemoveItem: %+v", res)
	}
	expectCart(t, c, want.GetItems()...)
}

func TestRemoveMissingItemFailsAndChangesNothing(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	res := remove(t, c, "pear")
	want := testkit.Failure{Description: "Cannot remove item pear because it is not in the cart"}
	if res.Failure == nil || *res.Failure != want || res.Updated != nil || res.Deleted {
		t.Fatalf("%+v, want failure %+v", res, want)
	}
	expectStored(t, c, &pb.Cart{Items: []*pb.LineItem{item("apple", "Apple", 1)}})
	expectCart(t, c, item("apple", "Apple", 1))
}

func TestRemoveCart(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	res, err := testkit.CallValue[*emptypb.Empty](c, "RemoveCart", &pb.RemoveShoppingCart{UserId: user})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil || !res.Deleted {
		t.Fatalf("RemoveCart: %+v", res)
	}
	expectStored(t, c, nil)
	expectCart(t, c)
	// A removed cart starts again from empty.
	add(t, c, "pear", "Pear", 2)
	expectCart(t, c, item("pear", "Pear", 2))

	// Removing a cart that was never stored is fine.
	empty := newCart(t)
	res, err = testkit.CallValue[*emptypb.Empty](empty, "RemoveCart", &pb.RemoveShoppingCart{UserId: user})
	if err != nil || res.Failure != nil || !res.Deleted {
		t.Fatalf("RemoveCart of a new cart: %v %+v", err, res)
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

func TestReactivationFromTheStoredValue(t *testing.T) {
	c := newCart(t)
	add(t, c, "apple", "Apple", 1)
	add(t, c, "pear", "Pear", 2)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	expectCart(t, c, item("apple", "Apple", 1), item("pear", "Pear", 2))

	stored := newCart(t, testkit.WithValue(&pb.Cart{Items: []*pb.LineItem{item("plum", "Plum", 7)}}))
	add(t, stored, "plum", "Plum", 1)
	expectCart(t, stored, item("plum", "Plum", 8))
}
