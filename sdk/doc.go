// Package sdk is the Go support library for Cloudstate user functions: it
// serves entities to a Cloudstate proxy over the Cloudstate protocol.
//
// A user function describes its API as a gRPC service in a .proto file (with
// the entity key marked by the cloudstate.entity_key field option), generates
// Go code for it with protoc-gen-go, and implements each method as a typed
// handler. The proxy serves the API to clients, routes every call by entity
// key to one entity, and stores the entity's events; the user function keeps
// the state in memory and decides which events to emit.
//
// # Event-sourced entities
//
// An event-sourced entity's state is a Go value of type T, rebuilt from
// events. Command handlers validate a request against the state and emit
// events; event handlers apply events to the state. Emitted events are
// applied immediately, so a handler sees its own changes:
//
//	type Cart struct{ items []*pb.LineItem }
//
//	func NewCartEntity() *sdk.EventSourcedEntity[Cart] {
//		e := sdk.NewEventSourcedEntity("com.example.shoppingcart.ShoppingCart",
//			func(entityID string) *Cart { return &Cart{} },
//			sdk.WithPersistenceID("shopping-cart"), sdk.WithSnapshotEvery(5))
//		sdk.OnCommand(e, "AddItem", func(ctx *sdk.CommandContext, c *Cart, in *pb.AddLineItem) (*emptypb.Empty, error) {
//			if in.GetQuantity() <= 0 {
//				return nil, ctx.Fail("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())
//			}
//			ctx.Emit(&pb.ItemAdded{Item: &pb.LineItem{ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()}})
//			return &emptypb.Empty{}, nil
//		})
//		sdk.OnEvent(e, func(c *Cart, ev *pb.ItemAdded) error {
//			c.items = append(c.items, ev.GetItem())
//			return nil
//		})
//		sdk.OnSnapshot(e,
//			func(c *Cart) (*pb.CartState, error) { return &pb.CartState{Items: c.items}, nil },
//			func(c *Cart, s *pb.CartState) error { c.items = s.GetItems(); return nil })
//		return e
//	}
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		defer stop()
//		srv := sdk.NewServer(sdk.WithServiceName("shopping-cart"), sdk.WithServiceVersion("1.0.0"))
//		if err := srv.RegisterEventSourced(NewCartEntity()); err != nil {
//			log.Fatal(err)
//		}
//		if err := srv.ListenAndServe(ctx, sdk.Addr()); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Handlers are typed with generics and checked against the service's
// descriptor when the entity is registered: every method needs a handler
// whose input and output types match the method. Registration reports every
// mistake at once.
//
// # Failures
//
// A handler fails a command by returning an error, usually from
// CommandContext.Fail; the client receives the error text (gRPC status
// UNKNOWN through the proxy). Events emitted before a failure are not
// persisted, and since they were already applied, the failure asks the proxy
// to restart the entity (rebuild its state from the journal). A panicking
// handler is recovered: the proxy is told the entity crashed and restarts it.
//
// # Protocol
//
// Per entity activation, the proxy opens a cloudstate.eventsourced.EventSourced
// stream and sends init (with the latest snapshot, if any), the journal events
// after the snapshot, then one command at a time. Each command gets exactly
// one reply with the events to persist, the client action (reply, forward or
// failure), side effects, and a snapshot whenever the sequence number crosses
// a multiple of the WithSnapshotEvery interval. Discovery
// (cloudstate.EntityDiscovery) answers with every registered service, the
// descriptors of its .proto file and all transitive imports.
//
// # Testing
//
// Package sdk/testkit runs an entity's handlers through the same command
// processing as the server, without a proxy or network.
package sdk
