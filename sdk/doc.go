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
// # Value entities
//
// A value entity's state is one protobuf message, which the proxy stores
// whole after every command that changes it. A handler gets a copy of the
// current value and replaces it with ValueContext.Update (or removes it with
// Delete); the change is kept only if the command succeeds:
//
//	func NewCartEntity() *sdk.ValueEntity[*pb.Cart] {
//		e := sdk.NewValueEntity("com.example.valueentity.shoppingcart.ShoppingCart",
//			func(userID string) *pb.Cart { return &pb.Cart{} },
//			sdk.WithPersistenceID("value-shopping-cart"))
//		sdk.OnValueCommand(e, "AddItem", func(ctx *sdk.ValueContext, cart *pb.Cart, in *pb.AddLineItem) (*emptypb.Empty, error) {
//			if in.GetQuantity() <= 0 {
//				return nil, ctx.Fail("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())
//			}
//			cart.Items = append(cart.Items, &pb.LineItem{ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()})
//			ctx.Update(cart)
//			return &emptypb.Empty{}, nil
//		})
//		sdk.OnValueCommand(e, "RemoveCart", func(ctx *sdk.ValueContext, _ *pb.Cart, _ *pb.RemoveShoppingCart) (*emptypb.Empty, error) {
//			ctx.Delete()
//			return &emptypb.Empty{}, nil
//		})
//		...
//		return e
//	}
//
// and srv.RegisterValueEntity(NewCartEntity()). Several Update and Delete
// calls in one command collapse into the last.
//
// # CRDT entities
//
// A CRDT entity's state is one CRDT (GCounter, PNCounter, GSet, ORSet,
// LWWRegister, Flag, ORMap or Vote) that the proxy owns, merges across its
// nodes and keeps up to date in the function. Handlers get it from the
// context with a typed accessor, which creates it on first use (the proxy
// learns about it with its first change), and change it with the type's
// mutators; each change is sent to the proxy as a delta with the reply, and
// undone if the handler fails. Set elements, register values and map keys
// are messages compared by their encoding; String("x") and its siblings
// give stable primitive encodings. Server-streaming methods take
// OnCRDTStreamed handlers, which keep the client's stream open by
// registering OnChange (run after every change of the CRDT, it may send
// the client a message or end the stream) and OnCancel (run when the
// client goes away, it may change the CRDT):
//
//	e := sdk.NewCRDTEntity("com.example.chat.presence.Presence")
//	sdk.OnCRDTStreamed(e, "Connect", func(ctx *sdk.CRDTStreamContext[*emptypb.Empty], in *pb.User) (*emptypb.Empty, error) {
//		ctx.Vote().Vote(true)
//		ctx.OnCancel(func(ctx *sdk.CRDTCancelContext) error {
//			if ctx.OpenStreams("Connect") == 0 {
//				ctx.Vote().Vote(false)
//			}
//			return nil
//		})
//		return nil, nil
//	})
//	sdk.OnCRDTStreamed(e, "Monitor", func(ctx *sdk.CRDTStreamContext[*pb.OnlineStatus], in *pb.User) (*pb.OnlineStatus, error) {
//		ctx.OnChange(func(ctx *sdk.CRDTChangeContext) (*pb.OnlineStatus, error) {
//			return &pb.OnlineStatus{Online: ctx.Vote().AtLeastOne()}, nil
//		})
//		return &pb.OnlineStatus{Online: ctx.Vote().AtLeastOne()}, nil
//	})
//
// and srv.RegisterCRDT(e). Unary methods take OnCRDTCommand handlers. A map's values are CRDTs too:
// ctx.ORMap().PNCounter(sdk.String("apple")).Increment(1). OnChange
// callbacks may only read the CRDT; ctx.Delete deletes it for good, and
// SetWriteConsistency asks the proxy to replicate a change further before
// it answers.
//
// # Actions
//
// An action is a stateless service: each call runs a handler, with no key
// and no stored state. Every gRPC shape is supported, each with its own
// kind of handler; ActionContext forwards, adds side effects and fails:
//
//	a := sdk.NewAction("com.example.cartactions.CartActions")
//	sdk.OnUnary(a, "Checkout", func(ctx *sdk.ActionContext, in *pb.CheckoutRequest) (*emptypb.Empty, error) {
//		ctx.Forward(cartService, "RemoveCart", &cartpb.RemoveShoppingCart{UserId: in.GetUserId()})
//		return nil, nil
//	})
//	sdk.OnServerStream(a, "Countdown", func(ctx *sdk.ActionContext, in *pb.CountdownRequest, send func(*pb.Tick) error) error { ... })
//	sdk.OnClientStream(a, "AddItems", func(ctx *sdk.ActionContext, recv func() (*pb.AddLineItem, error)) (*pb.Summary, error) { ... })
//	sdk.OnBidiStream(a, "Echo", func(ctx *sdk.ActionContext, recv func() (*pb.Message, error), send func(*pb.Message) error) error { ... })
//
// and srv.RegisterAction(a). recv returns io.EOF when the client has
// finished. A response is a reply, a forward, a failure or nothing, with the
// side effects recorded for it: unary and client-streaming calls get one,
// made when the handler returns (a nil reply means no message); streaming
// handlers make one per call of send, and effects recorded since the last
// send go with the next. The call's context (ActionContext.Context) is
// cancelled when the caller cancels. A handler error that carries a gRPC
// status ends the call with that status; any other error is a failure.
//
// Forward and side-effect targets must be services of the same user
// function (any entity type); the proxy routes them like client calls.
//
// # Failures
//
// A handler fails a command by returning an error, usually from the
// context's Fail; the client receives the error text (gRPC status UNKNOWN
// through the proxy). Events emitted before a failure are not persisted,
// and since they were already applied, the failure asks the proxy to
// restart the entity (rebuild its state from the journal). A value entity's
// failed command stores nothing and its side effects are dropped; a CRDT
// entity's failed command (or OnCancel) sends no change, and its changes to
// the local value are undone; an action's failure still carries its side effects, as the protocol
// requires. A panicking entity handler is recovered: the proxy is told the
// entity crashed and restarts it; a panicking action handler ends its call
// with status INTERNAL.
//
// # Protocol
//
// Per entity activation, the proxy opens a cloudstate.eventsourced.EventSourced
// stream and sends init (with the latest snapshot, if any), the journal events
// after the snapshot, then one command at a time. Each command gets exactly
// one reply with the events to persist, the client action (reply, forward or
// failure), side effects, and a snapshot whenever the sequence number crosses
// a multiple of the WithSnapshotEvery interval. Value entities work alike on
// a cloudstate.valueentity.ValueEntity stream: init carries the stored value
// (if any) and each reply an update or delete of it. On a
// cloudstate.crdt.Crdt stream, init carries the CRDT's value as a delta
// (or the stream starts with delete, if the CRDT was deleted before);
// commands, deltas for changes made elsewhere, and stream cancellations
// follow, each handled in order. A reply carries the command's delta; a
// streamed command's reply sets streamed when the handler registered a
// callback, and its later messages go as streamed messages; each stream
// cancellation gets exactly one response, with the OnCancel change. Each action call is one
// call of cloudstate.action.ActionProtocol of the same streaming shape; a
// streamed-in call starts with a command naming the method and carrying the
// request metadata, followed by one command per client message. Discovery
// (cloudstate.EntityDiscovery) answers with every registered service, the
// descriptors of its .proto file and all transitive imports.
//
// # Testing
//
// Package sdk/testkit runs an entity's or an action's handlers through the
// same processing as the server, without a proxy or network; for CRDT
// entities it also plays the proxy's deltas, deletes and cancellations.
package sdk
