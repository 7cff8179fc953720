// Package cart is the value-entity shopping cart: one entity per user,
// whose whole state is one valuecartpb.Cart message. It is a package of its
// own so that other functions (samples/cartactions) can serve it too.
package cart

import (
	"slices"

	pb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ServiceName is the cart's gRPC service.
const ServiceName = "com.example.valueentity.shoppingcart.ShoppingCart"

// PersistenceID namespaces the carts in the proxy's store.
const PersistenceID = "value-shopping-cart"

// New returns the shopping cart entity definition.
func New() *sdk.ValueEntity[*pb.Cart] {
	e := sdk.NewValueEntity(ServiceName, func(string) *pb.Cart { return &pb.Cart{} },
		sdk.WithPersistenceID(PersistenceID))
	sdk.OnValueCommand(e, "AddItem", addItem)
	sdk.OnValueCommand(e, "RemoveItem", removeItem)
	sdk.OnValueCommand(e, "GetCart", getCart)
	sdk.OnValueCommand(e, "RemoveCart", removeCart)
	return e
}

// addItem adds a new product at the end of the cart, or adds to the
// quantity of a product already in it (keeping its place).
func addItem(ctx *sdk.ValueContext, cart *pb.Cart, in *pb.AddLineItem) (*emptypb.Empty, error) {
	if in.GetQuantity() <= 0 {
		return nil, ctx.Fail("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())
	}
	// cart is the handler's own copy: change it in place, then store it.
	if i := find(cart, in.GetProductId()); i >= 0 {
		cart.Items[i].Quantity += in.GetQuantity()
	} else {
		cart.Items = append(cart.Items, &pb.LineItem{ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()})
	}
	ctx.Update(cart)
	return &emptypb.Empty{}, nil
}

func removeItem(ctx *sdk.ValueContext, cart *pb.Cart, in *pb.RemoveLineItem) (*emptypb.Empty, error) {
	i := find(cart, in.GetProductId())
	if i < 0 {
		return nil, ctx.Fail("Cannot remove item %s because it is not in the cart", in.GetProductId())
	}
	cart.Items = slices.Delete(cart.Items, i, i+1)
	ctx.Update(cart)
	return &emptypb.Empty{}, nil
}

func getCart(_ *sdk.ValueContext, cart *pb.Cart, _ *pb.GetShoppingCart) (*pb.Cart, error) {
	return cart, nil
}

// removeCart deletes the stored cart; the user starts again from an empty
// one. Removing a cart that does not exist succeeds.
func removeCart(ctx *sdk.ValueContext, _ *pb.Cart, _ *pb.RemoveShoppingCart) (*emptypb.Empty, error) {
	ctx.Delete()
	return &emptypb.Empty{}, nil
}

// find returns the index of productID in the cart, or -1.
func find(cart *pb.Cart, productID string) int {
	return slices.IndexFunc(cart.GetItems(), func(it *pb.LineItem) bool { return it.GetProductId() == productID })
}
