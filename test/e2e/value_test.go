package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/protocol"
	vpb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction2/e2e2pb"
)

// Tests of value entities through the proxy: the value-entity cart sample
// (samples/valuecart), the Tally entity of testfunction2, and a raw
// misbehaving function written against the protocol directly.

// extraBins are the binaries only the value-entity, action and forward
// tests use. They are built once, on first use, into the directory TestMain
// built the others in (and removes at the end).
var extraBins struct {
	once                                  sync.Once
	err                                   error
	valuecart, cartactions, testfunction2 string
}

// requireExtraBinaries builds extraBins unless that was done already.
func requireExtraBinaries(t *testing.T) {
	t.Helper()
	requireBinaries(t)
	extraBins.once.Do(func() {
		built, err := testproc.Build(repoRoot, filepath.Dir(bins.cloudstate), buildFlags(),
			"./samples/valuecart", "./samples/cartactions", "./test/e2e/testfunction2")
		if err != nil {
			extraBins.err = err
			return
		}
		extraBins.valuecart = built["valuecart"]
		extraBins.cartactions = built["cartactions"]
		extraBins.testfunction2 = built["testfunction2"]
	})
	if extraBins.err != nil {
		t.Fatalf("build the value-entity and action test binaries: %v", extraBins.err)
	}
}

// startExtraStack is startStack for one of extraBins, chosen by pick.
func startExtraStack(t *testing.T, pick func() string, extra ...string) *stack {
	t.Helper()
	requireExtraBinaries(t)
	return startStack(t, pick(), extra...)
}

func valueCartBin() string     { return extraBins.valuecart }
func cartActionsBin() string   { return extraBins.cartactions }
func testFunction2Bin() string { return extraBins.testfunction2 }

// valueCart wraps the value cart's generated client with test-failing
// helpers.
type valueCart struct {
	t *testing.T
	c vpb.ShoppingCartClient
}

func newValueCart(t *testing.T, conn *grpc.ClientConn) valueCart {
	return valueCart{t: t, c: vpb.NewShoppingCartClient(conn)}
}

func (c valueCart) add(user, product string, qty int32) {
	c.t.Helper()
	if _, err := c.c.AddItem(callCtx(c.t), &vpb.AddLineItem{UserId: user, ProductId: product, Name: strings.ToUpper(product), Quantity: qty}); err != nil {
		c.t.Fatalf("AddItem(%s, %s, %d): %v", user, product, qty, err)
	}
}

func (c valueCart) get(user string) *vpb.Cart {
	c.t.Helper()
	cart, err := c.c.GetCart(callCtx(c.t), &vpb.GetShoppingCart{UserId: user})
	if err != nil {
		c.t.Fatalf("GetCart(%s): %v", user, err)
	}
	return cart
}

func (c valueCart) removeCart(user string) {
	c.t.Helper()
	if _, err := c.c.RemoveCart(callCtx(c.t), &vpb.RemoveShoppingCart{UserId: user}); err != nil {
		c.t.Fatalf("RemoveCart(%s): %v", user, err)
	}
}

func vItem(product string, qty int32) *vpb.LineItem {
	return &vpb.LineItem{ProductId: product, Name: strings.ToUpper(product), Quantity: qty}
}

// wantValueCart fails unless the cart holds exactly want, in this order.
func wantValueCart(t *testing.T, got *vpb.Cart, want ...*vpb.LineItem) {
	t.Helper()
	if !proto.Equal(got, &vpb.Cart{Items: want}) {
		t.Fatalf("cart = %v, want %v", got, &vpb.Cart{Items: want})
	}
}

func vItems(cart *vpb.Cart) map[string]int32 {
	m := make(map[string]int32)
	for _, it := range cart.GetItems() {
		m[it.GetProductId()] = it.GetQuantity()
	}
	return m
}

func TestValueCartAddRemoveGet(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, valueCartBin)
	cart := newValueCart(t, s.conn)

	wantValueCart(t, cart.get("alice"))
	cart.add("alice", "apple", 2)
	cart.add("alice", "pear", 1)
	cart.add("alice", "apple", 3)
	cart.add("bob", "fig", 7)
	wantValueCart(t, cart.get("alice"), vItem("apple", 5), vItem("pear", 1))

	if _, err := cart.c.RemoveItem(callCtx(t), &vpb.RemoveLineItem{UserId: "alice", ProductId: "apple"}); err != nil {
		t.Fatalf("RemoveItem: %v", err)
	}
	wantValueCart(t, cart.get("alice"), vItem("pear", 1))

	// Failures reach the client with the function's description, and the
	// stored value does not change.
	_, err := cart.c.RemoveItem(callCtx(t), &vpb.RemoveLineItem{UserId: "alice", ProductId: "kiwi"})
	wantStatus(t, err, codes.Unknown, "")
	if got := status.Convert(err).Message(); got != "Cannot remove item kiwi because it is not in the cart" {
		t.Errorf("failure message = %q, want the function's description exactly", got)
	}
	_, err = cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "alice", ProductId: "plum", Name: "PLUM", Quantity: 0})
	wantStatus(t, err, codes.Unknown, "Cannot add a quantity of 0 of item plum")
	_, err = cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "alice", ProductId: "plum", Name: "PLUM", Quantity: -4})
	wantStatus(t, err, codes.Unknown, "Cannot add a quantity of -4 of item plum")
	wantValueCart(t, cart.get("alice"), vItem("pear", 1))

	// RemoveCart deletes the stored value: the cart reads as empty, and
	// starts again from empty. Other carts are untouched.
	cart.removeCart("alice")
	wantValueCart(t, cart.get("alice"))
	cart.removeCart("alice") // removing a cart that does not exist succeeds
	cart.removeCart("nobody")
	wantValueCart(t, cart.get("alice"))
	cart.add("alice", "kiwi", 4)
	wantValueCart(t, cart.get("alice"), vItem("kiwi", 4))
	wantValueCart(t, cart.get("bob"), vItem("fig", 7))
}

// TestValueCartPassivation lets the proxy passivate carts (200 ms) and
// checks each read after idling is exact; then a new function process,
// which knows nothing, must get the carts from the proxy's store, including
// one that was deleted.
func TestValueCartPassivation(t *testing.T) {
	t.Parallel()
	const passivation = 200 * time.Millisecond
	s := startExtraStack(t, valueCartBin, "--passivation-timeout", passivation.String())
	cart := newValueCart(t, s.conn)

	want := map[string]int32{}
	var order []string
	for i := range 12 {
		product := fmt.Sprintf("p%d", i%5)
		qty := int32(i + 1)
		cart.add("carol", product, qty)
		if _, ok := want[product]; !ok {
			order = append(order, product)
		}
		want[product] += qty
	}
	var wantItems []*vpb.LineItem
	for _, p := range order {
		wantItems = append(wantItems, vItem(p, want[p]))
	}
	cart.add("dave", "x", 1)
	cart.removeCart("dave")
	cart.add("erin", "y", 2)

	reads := 0
	testproc.EventuallyEvery(t, 5*time.Second, passivation+100*time.Millisecond, func() error {
		reads++
		wantValueCart(t, cart.get("carol"), wantItems...)
		if reads < 2 {
			return fmt.Errorf("only %d read(s) after idling", reads)
		}
		return nil
	})
	wantValueCart(t, cart.get("dave"))

	if !s.fn.Stop(10 * time.Second) {
		t.Fatal("value cart did not stop on SIGTERM")
	}
	s.fn = startFunction(t, valueCartBin(), s.fnPort)
	testproc.Eventually(t, 10*time.Second, func() error {
		got, err := cart.c.GetCart(callCtx(t), &vpb.GetShoppingCart{UserId: "carol"})
		if err != nil {
			return err
		}
		wantValueCart(t, got, wantItems...)
		return nil
	})
	wantValueCart(t, cart.get("dave"))
	wantValueCart(t, cart.get("erin"), vItem("y", 2))
	cart.add("carol", "p0", 1)
	want["p0"]++
	if got := vItems(cart.get("carol")); !maps.Equal(got, want) {
		t.Fatalf("cart after one more add = %v, want %v", got, want)
	}
}

// TestValuePassivationSeen shows passivation from the function's side: the
// Tally reports the id of each command on its stream, which restarts at 1
// on a new activation; the total must survive.
func TestValuePassivationSeen(t *testing.T) {
	t.Parallel()
	const passivation = 200 * time.Millisecond
	s := startExtraStack(t, testFunction2Bin, "--passivation-timeout", passivation.String())
	tally := e2e2pb.NewTallyClient(s.conn)

	var total int64
	for i := range 5 {
		total += int64(i + 1)
		v, err := tally.Add(callCtx(t), &e2e2pb.TallyAdd{Id: "t", Amount: int64(i + 1)})
		if err != nil {
			t.Fatalf("Tally.Add: %v", err)
		}
		if v.GetTotal() != total || v.GetCommandId() != int64(i+1) {
			t.Fatalf("Add %d = %v, want total %d as command %d of one activation", i+1, v, total, i+1)
		}
	}
	testproc.EventuallyEvery(t, 5*time.Second, passivation+100*time.Millisecond, func() error {
		v, err := tally.Get(callCtx(t), &e2e2pb.TallyGet{Id: "t"})
		if err != nil {
			t.Fatalf("Tally.Get: %v", err)
		}
		if v.GetTotal() != total {
			t.Fatalf("total after idling = %d, want %d", v.GetTotal(), total)
		}
		if v.GetCommandId() != 1 {
			return fmt.Errorf("Get was command %d of its stream: not passivated yet", v.GetCommandId())
		}
		return nil
	})
}

// TestValueCartConcurrent makes 200 concurrent calls over 50 carts; each
// cart must end with exactly the sum of what was added to it.
func TestValueCartConcurrent(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, valueCartBin)
	client := vpb.NewShoppingCartClient(s.conn)

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
			_, err := client.AddItem(callCtx(t), &vpb.AddLineItem{UserId: r.user, ProductId: r.product, Name: r.product, Quantity: r.qty})
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
		cart, err := client.GetCart(callCtx(t), &vpb.GetShoppingCart{UserId: fmt.Sprintf("user-%d", c)})
		if err != nil {
			t.Fatalf("GetCart(user-%d): %v", c, err)
		}
		if got := vItems(cart); !maps.Equal(got, want[c]) {
			t.Errorf("cart user-%d = %v, want %v", c, got, want[c])
		}
	}
}

// TestValueCartBadPayloads: request bytes that do not parse as the
// method's input fail with INVALID_ARGUMENT (ERR-1 deviation), and so does
// an empty entity id; the proxy goes on serving, and the cart they were
// aimed at is unchanged.
func TestValueCartBadPayloads(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, valueCartBin)
	cart := newValueCart(t, s.conn)
	cart.add("frank", "apple", 1)

	garbage := map[string][]byte{
		"truncated string":  {0x0a, 0x05, 'f'},
		"unterminated int":  {0x20, 0xff, 0xff},
		"bad wire type":     {0x0f},
		"field number zero": {0x02, 0x00},
		"all 0xff":          {0xff, 0xff, 0xff, 0xff},
		"user id not utf-8": {0x0a, 0x02, 0xff, 0xfe},
	}
	for _, method := range []string{"AddItem", "RemoveItem", "GetCart", "RemoveCart"} {
		for _, name := range slices.Sorted(maps.Keys(garbage)) {
			in := garbage[name]
			var out []byte
			err := s.conn.Invoke(callCtx(t), "/com.example.valueentity.shoppingcart.ShoppingCart/"+method, &in, &out, grpc.ForceCodec(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s with %s payload % x: got %v, want INVALID_ARGUMENT", method, name, in, err)
			}
		}
	}
	_, err := cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "", ProductId: "apple", Name: "APPLE", Quantity: 1})
	wantStatus(t, err, codes.InvalidArgument, "")
	_, err = cart.c.RemoveCart(callCtx(t), &vpb.RemoveShoppingCart{})
	wantStatus(t, err, codes.InvalidArgument, "")

	var out []byte
	empty := []byte{}
	err = s.conn.Invoke(callCtx(t), "/com.example.valueentity.shoppingcart.ShoppingCart/Checkout", &empty, &out, grpc.ForceCodec(rawCodec{}))
	wantStatus(t, err, codes.Unimplemented, "")

	// The proxy still serves, and the cart is as it was.
	cart.add("frank", "apple", 1)
	wantValueCart(t, cart.get("frank"), vItem("apple", 2))
}

// TestValueCartBadPayloadLogged: a request the proxy rejects as malformed
// must leave a line in the proxy's log that names the method, so an
// operator can see why a client's calls fail.
func TestValueCartBadPayloadLogged(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, valueCartBin)
	const method = "/com.example.valueentity.shoppingcart.ShoppingCart/AddItem"
	in := []byte{0x0a, 0x05, 'f'}
	var out []byte
	err := s.conn.Invoke(callCtx(t), method, &in, &out, grpc.ForceCodec(rawCodec{}))
	wantStatus(t, err, codes.InvalidArgument, "")
	testproc.Eventually(t, 3*time.Second, func() error {
		if !strings.Contains(s.proxy.Output(), method) {
			return fmt.Errorf("the proxy's log (debug level) has no line naming %s after it rejected a malformed request", method)
		}
		return nil
	})
	newValueCart(t, s.conn).add("frank", "apple", 1)
}

// Products that make the raw function misbehave when AddItem names them.
const (
	rawWrongID    = "wrong-id"    // reply (with an update) for a command id that is not in flight
	rawClose      = "close"       // end the stream without replying
	rawFailUpdate = "fail-update" // fail the command, but send an update with the failure
	rawEmpty      = "empty"       // send an empty ValueEntityStreamOut
	rawTopFailure = "top-failure" // send a stream-level failure instead of a reply
	rawHang       = "hang"        // never reply; end the stream when the proxy does
)

// rawDiscovery answers discovery for the raw function and records what the
// proxy reports with reportError.
type rawDiscovery struct {
	protocol.UnimplementedEntityDiscoveryServer
	spec *protocol.EntitySpec

	mu       sync.Mutex
	reported []string
}

func (d *rawDiscovery) Discover(context.Context, *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	return d.spec, nil
}

func (d *rawDiscovery) ReportError(_ context.Context, e *protocol.UserFunctionError) (*emptypb.Empty, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reported = append(d.reported, e.GetMessage())
	return &emptypb.Empty{}, nil
}

// wantReport waits until the proxy has reported an error containing text.
func (d *rawDiscovery) wantReport(t *testing.T, text string) {
	t.Helper()
	testproc.Eventually(t, 5*time.Second, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, r := range d.reported {
			if strings.Contains(r, text) {
				return nil
			}
		}
		return fmt.Errorf("no reportError containing %q among %q", text, d.reported)
	})
}

// rawValueEntity serves the value cart's API as a value entity written
// against the protocol directly (no SDK): each stream keeps the cart it was
// initialised with; AddItem and GetCart behave like the sample unless
// AddItem names one of the raw* products.
type rawValueEntity struct {
	protocol.UnimplementedValueEntityServer
	// hung receives the entity id of every rawHang command, once the
	// function has it and before it starts to hang.
	hung chan string
}

func (r rawValueEntity) Handle(stream protocol.ValueEntity_HandleServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	init := first.GetInit()
	if init == nil {
		return status.Error(codes.FailedPrecondition, "the first message is not init")
	}
	cart := &vpb.Cart{}
	if v := init.GetState().GetValue(); v != nil {
		if err := v.UnmarshalTo(cart); err != nil {
			return status.Errorf(codes.InvalidArgument, "stored value: %v", err)
		}
	}
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		cmd := in.GetCommand()
		if isRawHang(cmd) {
			r.hung <- cmd.GetEntityId()
			<-stream.Context().Done()
			return stream.Context().Err()
		}
		out, end, err := rawCommand(cmd, cart)
		if err != nil {
			return err
		}
		if end {
			return nil
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

// isRawHang reports whether cmd is an AddItem of rawHang.
func isRawHang(cmd *protocol.Command) bool {
	in := &vpb.AddLineItem{}
	return cmd.GetName() == "AddItem" && cmd.GetPayload().UnmarshalTo(in) == nil && in.GetProductId() == rawHang
}

// rawCommand answers one command: the message to send, or end to close
// the stream without one.
func rawCommand(cmd *protocol.Command, cart *vpb.Cart) (out *protocol.ValueEntityStreamOut, end bool, err error) {
	reply := func(id int64, msg proto.Message, update *vpb.Cart) (*protocol.ValueEntityStreamOut, bool, error) {
		payload, err := anypb.New(msg)
		if err != nil {
			return nil, false, err
		}
		r := &protocol.ValueEntityReply{CommandId: id, ClientAction: &protocol.ClientAction{
			Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: payload}}}}
		if update != nil {
			v, err := anypb.New(update)
			if err != nil {
				return nil, false, err
			}
			r.StateAction = &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Update{Update: &protocol.ValueEntityUpdate{Value: v}}}
		}
		return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: r}}, false, nil
	}
	switch cmd.GetName() {
	case "GetCart":
		return reply(cmd.GetId(), cart, nil)
	case "AddItem":
	default:
		return nil, false, status.Errorf(codes.Unimplemented, "raw function: no command %q", cmd.GetName())
	}
	in := &vpb.AddLineItem{}
	if err := cmd.GetPayload().UnmarshalTo(in); err != nil {
		return nil, false, status.Errorf(codes.InvalidArgument, "AddItem payload: %v", err)
	}
	added := proto.Clone(cart).(*vpb.Cart)
	added.Items = append(added.Items, &vpb.LineItem{ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()})
	switch in.GetProductId() {
	case rawWrongID:
		return reply(cmd.GetId()+41, &emptypb.Empty{}, added)
	case rawClose:
		return nil, true, nil
	case rawFailUpdate:
		v, err := anypb.New(added)
		if err != nil {
			return nil, false, err
		}
		return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: &protocol.ValueEntityReply{
			CommandId:    cmd.GetId(),
			ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{CommandId: cmd.GetId(), Description: "raw function refuses " + rawFailUpdate}}},
			StateAction:  &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Update{Update: &protocol.ValueEntityUpdate{Value: v}}},
		}}}, false, nil
	case rawEmpty:
		return &protocol.ValueEntityStreamOut{}, false, nil
	case rawTopFailure:
		return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Failure{Failure: &protocol.Failure{
			CommandId: cmd.GetId(), Description: "raw function broke"}}}, false, nil
	}
	cart.Items = added.Items
	return reply(cmd.GetId(), &emptypb.Empty{}, cart)
}

// descriptorSet is the serialized FileDescriptorSet of fd and every file it
// imports, transitively, dependencies first.
func descriptorSet(t *testing.T, fd protoreflect.FileDescriptor) []byte {
	t.Helper()
	var files []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		files = append(files, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatalf("marshal descriptor set: %v", err)
	}
	return b
}

// startRawStack serves the raw function on a real gRPC server and starts a
// real proxy in front of it, with extra proxy flags.
func startRawStack(t *testing.T, extra ...string) (*proxy, *grpc.ClientConn, *rawDiscovery, rawValueEntity) {
	t.Helper()
	requireBinaries(t)
	disc := &rawDiscovery{spec: &protocol.EntitySpec{
		Proto: descriptorSet(t, vpb.File_valuecart_proto),
		Entities: []*protocol.Entity{{
			EntityType:    protocol.ValueEntity_ServiceDesc.ServiceName,
			ServiceName:   "com.example.valueentity.shoppingcart.ShoppingCart",
			PersistenceId: "raw-cart",
		}},
		ServiceInfo: &protocol.ServiceInfo{ServiceName: "raw-value-function", ServiceRuntime: "go test",
			ProtocolMajorVersion: 0, ProtocolMinorVersion: 2},
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	protocol.RegisterEntityDiscoveryServer(srv, disc)
	entity := rawValueEntity{hung: make(chan string, 16)}
	protocol.RegisterValueEntityServer(srv, entity)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	// Registered before the proxy's cleanups, so it runs after them: the
	// proxy is stopped first, then this server.
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("raw function: %v", err)
		}
	})
	p := startProxy(t, lis.Addr().(*net.TCPAddr).Port, extra...)
	p.waitReady(t)
	return p, p.dial(t), disc, entity
}

// TestValueEntityMisbehavingFunction runs the real proxy against a function
// that breaks the value-entity protocol in each way the proxy must handle
// (VE-5): every broken command gets its clear status, the proxy logs it,
// nothing the broken reply carried is stored, and the next command is
// served by a new activation.
func TestValueEntityMisbehavingFunction(t *testing.T) {
	t.Parallel()
	p, conn, disc, _ := startRawStack(t)
	cart := newValueCart(t, conn)
	logged := func(t *testing.T, text string) {
		t.Helper()
		testproc.Eventually(t, 5*time.Second, func() error {
			if !strings.Contains(p.Output(), text) {
				return fmt.Errorf("the proxy's log has no line containing %q", text)
			}
			return nil
		})
	}
	addFails := func(t *testing.T, product, want string) {
		t.Helper()
		_, err := cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "alice", ProductId: product, Name: "X", Quantity: 1})
		if st := status.Convert(err); err == nil || st.Code() != codes.Unknown || st.Message() != want {
			t.Fatalf("AddItem(%s) = %v, want UNKNOWN %q", product, err, want)
		}
	}
	cart.add("alice", "apple", 1)
	wantValueCart(t, cart.get("alice"), vItem("apple", 1))

	// AddItem is command 3 of this activation; the raw function answers 44.
	t.Run("reply for an unknown command id", func(t *testing.T) {
		addFails(t, rawWrongID, "Unexpected Value entity reply")
		logged(t, "sent a reply for command 44")
		disc.wantReport(t, "sent a reply for command 44")
	})
	cart.add("alice", "pear", 1)
	wantValueCart(t, cart.get("alice"), vItem("apple", 1), vItem("pear", 1))

	t.Run("stream closed without a reply", func(t *testing.T) {
		addFails(t, rawClose, "Unexpected Value entity termination")
		logged(t, "user function closed the entity stream")
	})
	cart.add("alice", "fig", 1)
	wantValueCart(t, cart.get("alice"), vItem("apple", 1), vItem("pear", 1), vItem("fig", 1))

	t.Run("failure with an update", func(t *testing.T) {
		addFails(t, rawFailUpdate, "raw function refuses "+rawFailUpdate)
		disc.wantReport(t, "fails the command but also carries a state action")
		// A new activation reads the stored value: the update that came
		// with the failure must not be in it.
		addFails(t, rawClose, "Unexpected Value entity termination")
		wantValueCart(t, newValueCart(t, conn).get("alice"), vItem("apple", 1), vItem("pear", 1), vItem("fig", 1))
	})

	t.Run("empty message", func(t *testing.T) {
		addFails(t, rawEmpty, "Unexpected Value entity failure")
		logged(t, "sent an empty message")
		disc.wantReport(t, "sent an empty message")
	})
	t.Run("stream-level failure", func(t *testing.T) {
		addFails(t, rawTopFailure, "Unexpected Value entity failure")
		logged(t, "raw function broke")
	})

	// Still serving, with exactly the value of the well-behaved commands.
	cart.add("alice", "kiwi", 1)
	wantValueCart(t, cart.get("alice"), vItem("apple", 1), vItem("pear", 1), vItem("fig", 1), vItem("kiwi", 1))
	cart.add("bob", "plum", 2)
	wantValueCart(t, cart.get("bob"), vItem("plum", 2))
	wantHTTP(t, p, "/ready", http.StatusOK)
}

// TestValueEntityFunctionHangs: a function that never answers a command.
// After --relay-timeout the caller gets INTERNAL (ERR-1), the proxy logs
// it, commands queued behind it end without hanging, and the entity
// serves again.
func TestValueEntityFunctionHangs(t *testing.T) {
	t.Parallel()
	const relay = time.Second
	p, conn, _, fn := startRawStack(t, "--relay-timeout", relay.String())
	cart := newValueCart(t, conn)
	cart.add("hal", "apple", 1)

	hung := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "hal", ProductId: rawHang, Quantity: 1})
		hung <- err
	}()
	if id := <-fn.hung; id != "hal" {
		t.Fatalf("the hanging command went to entity %q", id)
	}
	// Two more commands for the same entity, sent while it hangs.
	queued := make(chan error, 2)
	for _, product := range []string{"pear", "fig"} {
		go func() {
			_, err := cart.c.AddItem(callCtx(t), &vpb.AddLineItem{UserId: "hal", ProductId: product, Name: strings.ToUpper(product), Quantity: 1})
			queued <- err
		}()
	}
	err := <-hung
	if status.Code(err) != codes.Internal {
		t.Errorf("the hanging command ended with %v, want INTERNAL", err)
	}
	if d := time.Since(start); d < relay || d > relay+5*time.Second {
		t.Errorf("the hanging command ended after %v, want about the relay timeout %v", d, relay)
	}
	// The queued commands arrived just after the hanging one, so their own
	// relay timeout ends at about the moment the entity gives up: either
	// may come first. A command that arrived after the entity stopped is
	// served by a new activation.
	for range 2 {
		err := <-queued
		st := status.Convert(err)
		switch {
		case err == nil:
		case st.Code() == codes.Unknown && st.Message() == "Value entity terminated":
		case st.Code() == codes.Internal && strings.Contains(st.Message(), "relay timeout"):
		default:
			t.Errorf("a command queued behind the hanging one ended with %v, want success, UNKNOWN \"Value entity terminated\" or INTERNAL (relay timeout)", err)
		}
	}
	got := vItems(cart.get("hal"))
	if got["apple"] != 1 || got[rawHang] != 0 {
		t.Errorf("cart after the hang = %v; want apple 1 and no %s", got, rawHang)
	}
	testproc.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(p.Output(), "did not answer a command within the relay timeout") {
			return fmt.Errorf("the proxy's log does not mention the relay timeout")
		}
		return nil
	})
	cart.add("hal", "kiwi", 1)
	if got := vItems(cart.get("hal")); got["kiwi"] != 1 {
		t.Errorf("cart after one more add = %v", got)
	}
}
