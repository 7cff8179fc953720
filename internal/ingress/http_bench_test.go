package ingress

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

// BenchmarkAddItem compares the cost of the HTTP/JSON path with the native
// gRPC path in one process, with the in-memory fake cart behind the router:
// what is left is the ingress's own work (and the clients').
func BenchmarkAddItem(b *testing.B) {
	h := startHTTP(b, Options{})
	b.Run("grpc", func(b *testing.B) {
		client := shoppingcartpb.NewShoppingCartClient(h.conn)
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := client.AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: "u" + strconv.Itoa(i%1000), ProductId: "p", Quantity: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("http-json", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		body := []byte(`{"productId":"p","quantity":1}`)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				resp, err := client.Post(h.base+"/cart/u"+strconv.Itoa(i%1000)+"/items/add", "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %s", resp.Status)
					return
				}
			}
		})
	})
}
