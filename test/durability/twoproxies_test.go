package durability

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// TestTwoProxiesOneCart runs two proxies, each with its own shopping-cart
// function, on one PostgreSQL schema, and has both serve the same cart at
// once. Each proxy's entity holds the cart's state in memory, so each
// append made through one proxy leaves the other one stale: its next append
// must be fenced off by the store. The loser's command must fail at once
// with a gRPC error (not hang), and succeed when retried, after the entity
// reloaded; the journal must stay one gap-free history holding every
// acknowledged write exactly once.
func TestTwoProxiesOneCart(t *testing.T) {
	t.Parallel()
	dsn, _ := testenv.PostgresSchema(t)
	var proxies []*proxy
	for range 2 {
		_, fnPort := startFunction(t)
		proxies = append(proxies, startProxy(t, fnPort, 0, dsn))
	}
	for _, p := range proxies {
		p.waitReady(t, 20*time.Second)
	}

	const (
		cart        = "shared"
		writers     = 4 // per proxy
		perWriter   = 60
		maxAttempts = 200
	)
	type outcome struct {
		product  string
		acked    bool
		attempts int
		codes    []codes.Code
		msgs     []string
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	for pi, p := range proxies {
		c := pb.NewShoppingCartClient(dial(t, p.addr))
		for w := range writers {
			wg.Go(func() {
				for n := range perWriter {
					o := outcome{product: fmt.Sprintf("p%d-w%d-%03d", pi, w, n)}
					for o.attempts < maxAttempts && !o.acked {
						o.attempts++
						ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
						_, err := c.AddItem(ctx, &pb.AddLineItem{UserId: cart, ProductId: o.product, Name: "P", Quantity: 1})
						cancel()
						if err == nil {
							o.acked = true
							break
						}
						st, _ := status.FromError(err)
						o.codes = append(o.codes, st.Code())
						o.msgs = append(o.msgs, st.Message())
					}
					mu.Lock()
					outcomes = append(outcomes, o)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()

	byCode := map[codes.Code]int{}
	messages := map[string]int{}
	mostAttempts := 0
	for _, o := range outcomes {
		for i, c := range o.codes {
			byCode[c]++
			messages[c.String()+": "+o.msgs[i]]++
		}
		mostAttempts = max(mostAttempts, o.attempts)
		if !o.acked {
			t.Errorf("%s was not acknowledged in %d attempts: %v", o.product, o.attempts, o.codes)
		}
	}
	t.Logf("failed attempts by code: %v; messages: %v; most attempts for one write: %d", byCode, messages, mostAttempts)
	if byCode[codes.DeadlineExceeded] > 0 {
		t.Errorf("%d attempts hung until their %v deadline; a fenced write must fail at once", byCode[codes.DeadlineExceeded], callTimeout)
	}
	if len(byCode) == 0 {
		t.Errorf("no write was ever fenced off: the two proxies did not collide, so the test proved nothing")
	}
	for _, p := range proxies {
		p.stopAndCheck(t)
	}

	st, err := postgres.Open(bounded(t, 30*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := bounded(t, 30*time.Second)
	seen := map[string]int64{}
	var seq int64
	var problems []string
	err = st.Replay(ctx, persistenceID(cart), 0, func(ev store.Event) error {
		if ev.Seq != seq+1 {
			problems = append(problems, fmt.Sprintf("event %d follows %d", ev.Seq, seq))
		}
		seq = ev.Seq
		var added pb.ItemAdded
		if err := ev.Payload.UnmarshalTo(&added); err != nil {
			return err
		}
		id := added.GetItem().GetProductId()
		if prev, dup := seen[id]; dup {
			problems = append(problems, fmt.Sprintf("%s at %d and %d", id, prev, ev.Seq))
		}
		seen[id] = ev.Seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if _, ok := seen[o.product]; o.acked && !ok {
			problems = append(problems, "acknowledged "+o.product+" missing")
		}
	}
	if want := 2 * writers * perWriter; len(seen) != want {
		problems = append(problems, fmt.Sprintf("%d distinct products in the journal, want %d (each write acknowledged once)", len(seen), want))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("the shared cart's history is wrong:\n  %s", strings.Join(problems[:min(len(problems), 20)], "\n  "))
	}
	t.Logf("history: %d events, seq 1..%d; proxies' failures: %v", len(seen), seq, slices.Sorted(maps.Keys(byCode)))
}
