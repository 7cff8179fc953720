package httpe2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/samples/cartactions/cartactionspb"
	"github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
)

const (
	cartActionsService = "com.example.cartactions.CartActions"
	valueCartService   = "com.example.valueentity.shoppingcart.ShoppingCart"
)

// TestStreamingOverH2C calls the cart-actions sample through the real
// proxy over cleartext HTTP/2 on its one port: Connect and gRPC-Web in all
// four stream shapes (the bidirectional Echo included, which needs
// HTTP/2), with native gRPC on the same port at the same time.
func TestStreamingOverH2C(t *testing.T) {
	st := startSample(t, "cartactions", bins.cartactions)
	base, addr := st.base, st.addr
	hc := testproc.H2CClient(t)
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"Connect", nil},
		{"Connect JSON", []connect.ClientOption{connect.WithProtoJSON()}},
		{"gRPC-Web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			echo := connect.NewClient[cartactionspb.ChatMessage, cartactionspb.ChatMessage](hc, base+"/"+cartActionsService+"/Echo", tc.opts...)
			chat(t, echo.CallBidiStream(ctx))

			addItems := connect.NewClient[cartactionspb.AddLineItem, cartactionspb.Summary](hc, base+"/"+cartActionsService+"/AddItems", tc.opts...)
			up := addItems.CallClientStream(ctx)
			for _, item := range []*cartactionspb.AddLineItem{
				{UserId: user, ProductId: "tea", Name: "Tea", Quantity: 2},
				{UserId: user, ProductId: "milk", Name: "Milk", Quantity: 1},
			} {
				if err := up.Send(item); err != nil {
					t.Fatalf("AddItems send: %v", err)
				}
			}
			summary, err := up.CloseAndReceive()
			if err != nil {
				t.Fatalf("AddItems: %v", err)
			}
			if summary.Msg.Lines != 2 || summary.Msg.TotalQuantity != 3 {
				t.Fatalf("AddItems summary %v, want 2 lines, quantity 3", summary.Msg)
			}

			getCart := connect.NewClient[valuecartpb.GetShoppingCart, valuecartpb.Cart](hc, base+"/"+valueCartService+"/GetCart", tc.opts...)
			cart, err := getCart.CallUnary(ctx, connect.NewRequest(&valuecartpb.GetShoppingCart{UserId: user}))
			if err != nil {
				t.Fatalf("GetCart: %v", err)
			}
			if n := len(cart.Msg.Items); n != 2 {
				t.Fatalf("cart %v, want the two items added", cart.Msg)
			}

			countdown := connect.NewClient[cartactionspb.CountdownRequest, cartactionspb.Tick](hc, base+"/"+cartActionsService+"/Countdown", tc.opts...)
			ticks, err := countdown.CallServerStream(ctx, connect.NewRequest(&cartactionspb.CountdownRequest{From: 2, IntervalMs: 10}))
			if err != nil {
				t.Fatalf("Countdown: %v", err)
			}
			var got []int32
			for ticks.Receive() {
				got = append(got, ticks.Msg().Remaining)
			}
			if err := ticks.Err(); err != nil {
				t.Fatalf("Countdown: %v", err)
			}
			ticks.Close()
			if fmt.Sprint(got) != "[2 1 0]" {
				t.Fatalf("Countdown ticks %v, want [2 1 0]", got)
			}

			checkout := connect.NewClient[cartactionspb.CheckoutRequest, emptypb.Empty](hc, base+"/"+cartActionsService+"/Checkout", tc.opts...)
			if _, err := checkout.CallUnary(ctx, connect.NewRequest(&cartactionspb.CheckoutRequest{UserId: user})); err != nil {
				t.Fatalf("Checkout: %v", err)
			}
			cart, err = getCart.CallUnary(ctx, connect.NewRequest(&valuecartpb.GetShoppingCart{UserId: user}))
			if err != nil || len(cart.Msg.Items) != 0 {
				t.Fatalf("GetCart after Checkout: %v, %v; want an empty cart", cart, err)
			}
		})
	}

	t.Run("native gRPC beside an open Connect stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		echo := connect.NewClient[cartactionspb.ChatMessage, cartactionspb.ChatMessage](hc, base+"/"+cartActionsService+"/Echo")
		open := echo.CallBidiStream(ctx)
		say(t, open, "first", "echo: first")

		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		native, err := cartactionspb.NewCartActionsClient(conn).Echo(ctx)
		if err != nil {
			t.Fatalf("gRPC Echo: %v", err)
		}
		for _, text := range []string{"a", "b"} {
			if err := native.Send(&cartactionspb.ChatMessage{Text: text}); err != nil {
				t.Fatalf("gRPC Echo send: %v", err)
			}
			got, err := native.Recv()
			if err != nil || got.Text != "echo: "+text {
				t.Fatalf("gRPC Echo answered %v, %v; want echo: %s", got, err, text)
			}
		}
		if err := native.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := native.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("gRPC Echo end: %v, want io.EOF", err)
		}
		// The Connect stream opened first is still open.
		chat(t, open)
	})
}

// say sends text on a bidirectional Echo and waits for its answer.
func say(t *testing.T, s *connect.BidiStreamForClient[cartactionspb.ChatMessage, cartactionspb.ChatMessage], text, want string) {
	t.Helper()
	if err := s.Send(&cartactionspb.ChatMessage{Text: text}); err != nil {
		t.Fatalf("Echo send %q: %v", text, err)
	}
	got, err := s.Receive()
	if err != nil {
		t.Fatalf("Echo answer to %q: %v", text, err)
	}
	if got.Text != want {
		t.Fatalf("Echo answered %q to %q, want %q", got.Text, text, want)
	}
}

// chat holds a conversation on Echo: each answer arrives before the next
// message is sent, and "bye" ends the call from the function's side.
func chat(t *testing.T, s *connect.BidiStreamForClient[cartactionspb.ChatMessage, cartactionspb.ChatMessage]) {
	t.Helper()
	say(t, s, "hello", "echo: hello")
	say(t, s, "over h2c", "echo: over h2c")
	say(t, s, "bye", "bye!")
	if _, err := s.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("Echo after bye: %v, want io.EOF", err)
	}
	if err := s.CloseRequest(); err != nil {
		t.Fatalf("Echo close request: %v", err)
	}
	if err := s.CloseResponse(); err != nil {
		t.Fatalf("Echo close response: %v", err)
	}
}
