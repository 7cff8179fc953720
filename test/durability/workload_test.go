package durability

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/store"
)

// persistenceID is the journal id of a cart of the shopping-cart sample.
func persistenceID(cart string) string { return "shopping-cart|" + cart }

// cartName is the id of cart number i.
func cartName(i int) string { return fmt.Sprintf("cart-%03d", i) }

// write is one AddItem a client sent. Every write adds a product id of its
// own, so its event can be found in the journal.
type write struct {
	cart, product string
	qty           int32
	code          codes.Code // codes.OK when acknowledged
	phase         string     // what the test was doing when it returned
	msg           string     // the status message of a failure
}

// load is clients writing AddItems to carts in a closed loop, each client
// one call at a time, recording every attempt.
type load struct {
	carts  int
	phase  atomic.Pointer[string]
	acked  atomic.Int64
	failed atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	writes []write
}

// callTimeout bounds every call: a call that runs into it is a hang.
const callTimeout = 15 * time.Second

// startLoad starts clients spread over conns, writing to carts carts.
func startLoad(t *testing.T, conns []*grpc.ClientConn, clients, carts int) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{carts: carts, cancel: cancel}
	l.setPhase("load")
	for c := range clients {
		client := pb.NewShoppingCartClient(conns[c%len(conns)])
		l.wg.Go(func() { l.client(ctx, c, client) })
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) setPhase(p string) { l.phase.Store(&p) }

// client writes until ctx ends. After a failure it pauses a little, so
// that a dead proxy is not hammered in a busy loop.
func (l *load) client(ctx context.Context, id int, c pb.ShoppingCartClient) {
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	for n := 0; ctx.Err() == nil; n++ {
		w := write{
			cart:    cartName(rng.IntN(l.carts)),
			product: fmt.Sprintf("c%02d-%06d", id, n),
			qty:     int32(1 + n%3),
		}
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := c.AddItem(callCtx, &pb.AddLineItem{UserId: w.cart, ProductId: w.product, Name: "P", Quantity: w.qty})
		cancel()
		if ctx.Err() != nil && err != nil {
			// Stopped by the test: the outcome is unknown, like any
			// failure, and the write is kept as attempted.
			w.code, w.phase = codes.Canceled, "stopped"
			l.record(w)
			return
		}
		st, _ := status.FromError(err)
		w.code, w.msg, w.phase = st.Code(), st.Message(), *l.phase.Load()
		l.record(w)
		if err == nil {
			l.acked.Add(1)
			continue
		}
		l.failed.Add(1)
		pause := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
	}
}

func (l *load) record(w write) {
	l.mu.Lock()
	l.writes = append(l.writes, w)
	l.mu.Unlock()
}

// stop ends the load and waits for every client.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// waitAcked waits until at least n writes have been acknowledged.
func (l *load) waitAcked(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	testproc.Eventually(t, timeout, func() error {
		if got := l.acked.Load(); got < n {
			return fmt.Errorf("%d writes acknowledged, want %d (%d failed)", got, n, l.failed.Load())
		}
		return nil
	})
}

// failures counts the failed writes by phase and status code, with one
// message of each.
func (l *load) failures() map[string]map[codes.Code]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[codes.Code]int{}
	for _, w := range l.writes {
		if w.code == codes.OK || w.code == codes.Canceled && w.phase == "stopped" {
			continue
		}
		if out[w.phase] == nil {
			out[w.phase] = map[codes.Code]int{}
		}
		out[w.phase][w.code]++
	}
	return out
}

// sampleMessages returns up to n distinct "CODE: message" texts of
// failures for which keep is true.
func (l *load) sampleMessages(n int, keep func(write) bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, w := range l.writes {
		if w.code == codes.OK || !keep(w) {
			continue
		}
		s := w.code.String() + ": " + w.msg
		if !seen[s] && len(out) < n {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// snapshotCarts reads every cart through the proxy: what its entities
// hold, to compare with the journal after the proxy has stopped.
func snapshotCarts(t *testing.T, conn *grpc.ClientConn, carts int) map[string]*pb.Cart {
	t.Helper()
	c := pb.NewShoppingCartClient(conn)
	out := make(map[string]*pb.Cart, carts)
	for i := range carts {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		cart, err := c.GetCart(ctx, &pb.GetShoppingCart{UserId: cartName(i)})
		cancel()
		if err != nil {
			t.Fatalf("GetCart(%s): %v", cartName(i), err)
		}
		out[cartName(i)] = cart
	}
	return out
}

// reader is what the checks read a store through.
type reader interface {
	store.Journal
	store.SnapshotStore
}

// found is an AddItem event read from the journal.
type found struct {
	cart string
	seq  int64
	item *pb.LineItem
}

// checkJournal reads the journal of every cart and checks it against what
// the clients did:
//   - sequence numbers run 1, 2, 3 ... without gaps, and HighestSeq agrees;
//   - every event is an ItemAdded whose product id was sent by a client to
//     that cart with that quantity (nothing invented or misplaced);
//   - no product id appears twice (nothing duplicated);
//   - every acknowledged write is there;
//   - the latest snapshot equals the events up to its sequence number;
//   - views, when given, equal the events (what the proxy served after
//     recovery is what the journal holds).
//
// It returns the number of events.
func checkJournal(t *testing.T, st reader, l *load, views map[string]*pb.Cart) int {
	t.Helper()
	ctx := bounded(t, time.Minute)
	attempted := map[string]write{}
	l.mu.Lock()
	writes := slices.Clone(l.writes)
	l.mu.Unlock()
	for _, w := range writes {
		attempted[w.product] = w
	}

	byProduct := map[string]found{}
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	events := 0
	for i := range l.carts {
		cart := cartName(i)
		pid := persistenceID(cart)
		var items []*pb.LineItem // in journal order
		var seq int64
		err := st.Replay(ctx, pid, 0, func(ev store.Event) error {
			if ev.Seq != seq+1 {
				problem("%s: event %d follows %d", pid, ev.Seq, seq)
			}
			seq = ev.Seq
			var added pb.ItemAdded
			if err := ev.Payload.UnmarshalTo(&added); err != nil {
				problem("%s seq %d: %v", pid, ev.Seq, err)
				return nil
			}
			it := added.GetItem()
			items = append(items, it)
			if prev, dup := byProduct[it.GetProductId()]; dup {
				problem("product %s twice: %s seq %d and %s seq %d", it.GetProductId(), prev.cart, prev.seq, cart, ev.Seq)
			}
			byProduct[it.GetProductId()] = found{cart: cart, seq: ev.Seq, item: it}
			w, ok := attempted[it.GetProductId()]
			switch {
			case !ok:
				problem("%s seq %d: product %s was never sent", pid, ev.Seq, it.GetProductId())
			case w.cart != cart || w.qty != it.GetQuantity():
				problem("%s seq %d: product %s quantity %d, but it was sent to %s with quantity %d",
					pid, ev.Seq, it.GetProductId(), it.GetQuantity(), w.cart, w.qty)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("replay %s: %v", pid, err)
		}
		events += len(items)
		highest, err := st.HighestSeq(ctx, pid)
		if err != nil {
			t.Fatalf("highest seq of %s: %v", pid, err)
		}
		if highest != seq {
			problem("%s: HighestSeq %d, but replay ended at %d", pid, highest, seq)
		}
		checkSnapshot(ctx, t, st, pid, items, problem)
		if view, ok := views[cart]; ok && !proto.Equal(view, fold(items)) {
			problem("%s: the proxy served %d line items, the journal folds to %d", cart, len(view.GetItems()), len(fold(items).GetItems()))
		}
	}

	var acked, failedPresent, failedAbsent int
	for _, w := range writes {
		_, present := byProduct[w.product]
		switch {
		case w.code == codes.OK:
			acked++
			if !present {
				problem("acknowledged write lost: %s to %s (quantity %d)", w.product, w.cart, w.qty)
			}
		case present:
			failedPresent++
		default:
			failedAbsent++
		}
	}
	if len(problems) > 0 {
		t.Errorf("journal check failed (%d events, %d acknowledged writes); first problems:\n  %s",
			events, acked, strings.Join(problems, "\n  "))
	}
	t.Logf("journal: %d events in %d carts; %d writes acknowledged; %d failed writes, of which %d were stored anyway (outcome unknown to the client)",
		events, l.carts, acked, failedPresent+failedAbsent, failedPresent)
	return events
}

// checkSnapshot checks that pid's latest snapshot, if any, is the cart
// folded from its events up to the snapshot's sequence number.
func checkSnapshot(ctx context.Context, t *testing.T, st reader, pid string, items []*pb.LineItem, problem func(string, ...any)) {
	t.Helper()
	snap, ok, err := st.LatestSnapshot(ctx, pid)
	if err != nil {
		t.Fatalf("latest snapshot of %s: %v", pid, err)
	}
	if !ok {
		return
	}
	if snap.Seq > int64(len(items)) {
		problem("%s: snapshot at %d is past the last event %d", pid, snap.Seq, len(items))
		return
	}
	var state pb.CartState
	if err := snap.Payload.UnmarshalTo(&state); err != nil {
		problem("%s: snapshot: %v", pid, err)
		return
	}
	if want := fold(items[:snap.Seq]); !proto.Equal(&pb.Cart{Items: state.GetItems()}, want) {
		problem("%s: snapshot at %d holds %d items, the events up to it fold to %d", pid, snap.Seq, len(state.GetItems()), len(want.GetItems()))
	}
}

// fold applies ItemAdded events as the sample does: a new product is
// appended, a known one has its quantity increased.
func fold(items []*pb.LineItem) *pb.Cart {
	cart := &pb.Cart{}
	at := map[string]int{}
	for _, it := range items {
		if i, ok := at[it.GetProductId()]; ok {
			cart.Items[i].Quantity += it.GetQuantity()
			continue
		}
		at[it.GetProductId()] = len(cart.Items)
		cart.Items = append(cart.Items, proto.CloneOf(it))
	}
	return cart
}

// wantOnly fails the test if any failure in the given phases has a code
// other than want; it logs what was seen.
func wantOnly(t *testing.T, l *load, want codes.Code, phases ...string) {
	t.Helper()
	f := l.failures()
	for _, phase := range slices.Sorted(maps.Keys(f)) {
		t.Logf("failures while %s: %v", phase, f[phase])
	}
	for _, phase := range phases {
		for code, n := range f[phase] {
			if code != want {
				msgs := l.sampleMessages(3, func(w write) bool { return w.phase == phase && w.code == code })
				t.Errorf("%d writes failed with %s while %s, want only %s; e.g. %q", n, code, phase, want, msgs)
			}
		}
	}
}
