package httpe2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

// BenchmarkAddItem measures the shopping cart's AddItem through one real
// proxy (in-memory store) over native gRPC and over HTTP/JSON, with 1 and
// 32 concurrent clients, calls spread over 1000 carts as in loadgen's
// es-add scenario. Each client has its own connection (HTTP/1.1 has one
// call in flight per connection; gRPC clients share one HTTP/2 connection).
//
//	go test ./test/http -run '^$' -bench AddItem -benchtime 5s -count 5
//
// CLOUDSTATE_BENCH_PROXY names another cloudstate binary to measure, for
// comparing the gRPC path with an earlier build.
func BenchmarkAddItem(b *testing.B) {
	if p := os.Getenv("CLOUDSTATE_BENCH_PROXY"); p != "" {
		bins.cloudstate = p
	}
	s := startStack(b)
	const carts = 1000
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	grpcClient := shoppingcartpb.NewShoppingCartClient(conn)
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	bodies := make([][]byte, carts)
	for i := range bodies {
		bodies[i] = []byte(`{"productId":"p","name":"P","quantity":1}`)
	}

	protocols := []struct {
		name string
		call func(ctx context.Context, cart int) error
	}{
		{"grpc", func(ctx context.Context, cart int) error {
			_, err := grpcClient.AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: "u" + strconv.Itoa(cart), ProductId: "p", Name: "P", Quantity: 1})
			return err
		}},
		{"http-json", func(ctx context.Context, cart int) error {
			req, err := http.NewRequestWithContext(ctx, "POST", s.base+"/cart/u"+strconv.Itoa(cart)+"/items/add", bytes.NewReader(bodies[cart]))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := httpClient.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		}},
	}
	for _, clients := range []int{1, 32} {
		for _, p := range protocols {
			b.Run(fmt.Sprintf("%s/clients=%d", p.name, clients), func(b *testing.B) {
				runClients(b, clients, carts, p.call)
			})
		}
	}
}

// runClients makes b.N calls from the given number of concurrent clients
// and reports calls per second.
func runClients(b *testing.B, clients, carts int, call func(ctx context.Context, cart int) error) {
	ctx := context.Background()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	startAt := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := call(ctx, int(i*7919+int64(c))%carts); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(startAt)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}
