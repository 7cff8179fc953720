package main

import (
	"slices"

	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Cart is the state of one user's shopping cart.
type Cart struct {
	// items in the order they were first added.
	items []*shoppingcartpb.LineItem
}

// NewEntity returns the shopping cart entity: one per user, persisted as
// ItemAdded/ItemRemoved events, with a snapshot every 5 events.
func NewEntity() *sdk.EventSourcedEntity[Cart] {
	e := sdk.NewEventSourcedEntity(shoppingcartpb.ShoppingCart_ServiceDesc.ServiceName,
		func(string) *Cart { return &Cart{} },
		sdk.WithPersistenceID("shopping-cart"), sdk.WithSnapshotEvery(5))
	sdk.OnCommand(e, "AddItem", addItem)
	sdk.OnCommand(e, "RemoveItem", removeItem)
	sdk.OnCommand(e, "GetCart", getCart)
	sdk.OnEvent(e, (*Cart).itemAdded)
	sdk.OnEvent(e, (*Cart).itemRemoved)
	sdk.OnSnapshot(e, (*Cart).snapshot, (*Cart).restore)
	return e
}

func addItem(ctx *sdk.CommandContext, c *Cart, in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
	if in.GetQuantity() <= 0 {
		return nil, ctx.Fail("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())
	}
	ctx.Emit(&shoppingcartpb.ItemAdded{Item: &shoppingcartpb.LineItem{
		ProductId: in.GetProductId(),
		Name:      in.GetName(),
		Quantity:  in.GetQuantity(),
	}})
	return &emptypb.Empty{}, nil
}

func removeItem(ctx *sdk.CommandContext, c *Cart, in *shoppingcartpb.RemoveLineItem) (*emptypb.Empty, error) {
	if c.find(in.GetProductId()) < 0 {
		return nil, ctx.Fail("Cannot remove item %s because it is not in the cart", in.GetProductId())
	}
	ctx.Emit(&shoppingcartpb.ItemRemoved{ProductId: in.GetProductId()})
	return &emptypb.Empty{}, nil
}

func getCart(_ *sdk.CommandContext, c *Cart, _ *shoppingcartpb.GetShoppingCart) (*shoppingcartpb.Cart, error) {
	return &shoppingcartpb.Cart{Items: cloneItems(c.items)}, nil
}

// itemAdded adds a new product at the end of the cart, or adds to the
// quantity of a product already in it (keeping its place).
func (c *Cart) itemAdded(ev *shoppingcartpb.ItemAdded) error {
	item := ev.GetItem()
	if i := c.find(item.GetProductId()); i >= 0 {
		c.items[i].Quantity += item.GetQuantity()
		return nil
	}
	c.items = append(c.items, proto.CloneOf(item))
	return nil
}

func (c *Cart) itemRemoved(ev *shoppingcartpb.ItemRemoved) error {
	if i := c.find(ev.GetProductId()); i >= 0 {
		c.items = slices.Delete(c.items, i, i+1)
	}
	return nil
}

func (c *Cart) snapshot() (*shoppingcartpb.CartState, error) {
	return &shoppingcartpb.CartState{Items: cloneItems(c.items)}, nil
}

func (c *Cart) restore(s *shoppingcartpb.CartState) error {
	c.items = cloneItems(s.GetItems())
	return nil
}

// find returns the index of productID in the cart, or -1.
func (c *Cart) find(productID string) int {
	return slices.IndexFunc(c.items, func(it *shoppingcartpb.LineItem) bool { return it.GetProductId() == productID })
}

// cloneItems copies items so that messages handed out (replies, snapshots)
// never alias the state.
func cloneItems(items []*shoppingcartpb.LineItem) []*shoppingcartpb.LineItem {
	out := make([]*shoppingcartpb.LineItem, len(items))
	for i, it := range items {
		out[i] = proto.CloneOf(it)
	}
	return out
}
