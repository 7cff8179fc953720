package crdte2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	likespb "github.com/cloudstate-go/cloudstate/samples/likes/likespb"
	presencepb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
)

// connectUser opens a Connect call for name on client; cancel ends it.
func connectUser(t *testing.T, client presencepb.PresenceClient, name string) (cancel context.CancelFunc) {
	t.Helper()
	ctx, cancel := contextWithCancel(t)
	stream, err := client.Connect(ctx, &presencepb.User{Name: name})
	if err != nil {
		t.Fatalf("Connect %s: %v", name, err)
	}
	// Connect sends nothing; drain it so the call's end is noticed.
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	return cancel
}

// monitorUser opens a Monitor call for name and returns its statuses.
func monitorUser(t *testing.T, client presencepb.PresenceClient, name string) <-chan recvResult[*presencepb.OnlineStatus] {
	t.Helper()
	ctx, _ := contextWithCancel(t)
	stream, err := client.Monitor(ctx, &presencepb.User{Name: name})
	if err != nil {
		t.Fatalf("Monitor %s: %v", name, err)
	}
	return streamReader(stream.Recv)
}

func wantOnline(t *testing.T, what string, ch <-chan recvResult[*presencepb.OnlineStatus], online bool) {
	t.Helper()
	if got := nextMsg(t, what, ch); got.GetOnline() != online {
		t.Fatalf("%s: online = %v, want %v", what, got.GetOnline(), online)
	}
}

// TestPresence: a Monitor sees the user go online when another client
// connects, stays online while a second connection comes and goes, and sees
// the user go offline when the last connection is cancelled (the stream
// cancellation reaches the function, whose vote changes).
func TestPresence(t *testing.T) {
	s := startStack(t, bins.presence)
	monitor := presencepb.NewPresenceClient(s.conn)
	clientB := presencepb.NewPresenceClient(dial(t, s.proxy.addr))
	clientC := presencepb.NewPresenceClient(dial(t, s.proxy.addr))

	alice := monitorUser(t, monitor, "alice")
	wantOnline(t, "alice at first", alice, false)

	cancelB := connectUser(t, clientB, "alice")
	wantOnline(t, "alice after B connects", alice, true)
	// A monitor opened now starts from the current status.
	late := monitorUser(t, clientC, "alice")
	wantOnline(t, "a later monitor", late, true)

	cancelC := connectUser(t, clientC, "alice")
	cancelB()
	// C's Connect may reach the entity after B's cancellation (they come
	// on different connections), which shows alice offline for a moment;
	// once both are in, she is online.
	if last := settle(t, alice, 300*time.Millisecond); last != nil && !last.GetOnline() {
		t.Fatal("alice is offline with C still connected")
	}

	cancelC()
	wantOnline(t, "alice after the last connection is cancelled", alice, false)
	wantOnline(t, "the later monitor", late, false)

	// Other users are separate entities.
	bob := monitorUser(t, monitor, "bob")
	wantOnline(t, "bob", bob, false)
	quiet(t, "alice while nothing happens", alice, 100*time.Millisecond)
}

// TestPresenceClientConnectionLost: a client that goes away without
// cancelling (its connection closes) is disconnected too.
func TestPresenceClientConnectionLost(t *testing.T) {
	s := startStack(t, bins.presence)
	alice := monitorUser(t, presencepb.NewPresenceClient(s.conn), "carol")
	wantOnline(t, "carol at first", alice, false)
	conn := dial(t, s.proxy.addr)
	connectUser(t, presencepb.NewPresenceClient(conn), "carol")
	wantOnline(t, "carol connected", alice, true)
	conn.Close()
	wantOnline(t, "carol's connection closed", alice, false)
}

// TestPresenceManyMonitors: one change reaches every monitor of a user.
func TestPresenceManyMonitors(t *testing.T) {
	s := startStack(t, bins.presence)
	const monitors = 100
	clients := []presencepb.PresenceClient{presencepb.NewPresenceClient(s.conn)}
	for i := 0; i < 3; i++ {
		clients = append(clients, presencepb.NewPresenceClient(dial(t, s.proxy.addr)))
	}
	var chans []<-chan recvResult[*presencepb.OnlineStatus]
	for i := 0; i < monitors; i++ {
		ch := monitorUser(t, clients[i%len(clients)], "dave")
		wantOnline(t, fmt.Sprintf("monitor %d at first", i), ch, false)
		chans = append(chans, ch)
	}
	cancel := connectUser(t, clients[0], "dave")
	for i, ch := range chans {
		wantOnline(t, fmt.Sprintf("monitor %d after connect", i), ch, true)
	}
	cancel()
	for i, ch := range chans {
		wantOnline(t, fmt.Sprintf("monitor %d after disconnect", i), ch, false)
	}
}

// TestLikes runs the likes sample's README flow: PNCounters per item, an
// ORMap of PNCounters per category fed by side effects, and a WatchHot
// stream that sees other clients' likes.
func TestLikes(t *testing.T) {
	s := startStack(t, bins.likes)
	likes := likespb.NewLikesClient(s.conn)
	hot := likespb.NewHotItemsClient(dial(t, s.proxy.addr))
	ctx := callCtx(t)

	like := func(item, category string) *likespb.LikeCount {
		t.Helper()
		got, err := likes.Like(ctx, &likespb.LikeRequest{ItemId: item, Category: category})
		if err != nil {
			t.Fatalf("Like %s: %v", item, err)
		}
		return got
	}
	wantHot := func(what string, got *likespb.HotList, want ...*likespb.ItemScore) {
		t.Helper()
		if !proto.Equal(got, &likespb.HotList{Category: got.GetCategory(), Items: want}) {
			t.Fatalf("%s: got {%v}, want items %v", what, prototext.Format(got), want)
		}
	}

	like("apple", "fruit")
	if got := like("apple", "fruit"); got.GetLikes() != 2 {
		t.Fatalf("apple has %d likes after two, want 2", got.GetLikes())
	}
	like("pear", "fruit")
	got, err := likes.GetLikes(ctx, &likespb.GetLikesRequest{ItemId: "apple"})
	if err != nil || got.GetLikes() != 2 {
		t.Fatalf("GetLikes apple = %v, %v; want 2", got, err)
	}
	list, err := hot.Hot(ctx, &likespb.HotRequest{Category: "fruit"})
	if err != nil {
		t.Fatal(err)
	}
	wantHot("hot fruit", list, &likespb.ItemScore{ItemId: "apple", Score: 2}, &likespb.ItemScore{ItemId: "pear", Score: 1})

	if got, err := likes.Unlike(ctx, &likespb.LikeRequest{ItemId: "pear", Category: "fruit"}); err != nil || got.GetLikes() != 0 {
		t.Fatalf("Unlike pear = %v, %v; want 0 likes", got, err)
	}
	_, err = likes.Unlike(ctx, &likespb.LikeRequest{ItemId: "pear", Category: "fruit"})
	wantStatus(t, "Unlike without likes", err, codes.Unknown, "Item pear has no likes")
	list, err = hot.Hot(ctx, &likespb.HotRequest{Category: "fruit"})
	if err != nil {
		t.Fatal(err)
	}
	wantHot("hot fruit without pear", list, &likespb.ItemScore{ItemId: "apple", Score: 2})
	if _, err := hot.RemoveItem(ctx, &likespb.RemoveItemRequest{Category: "fruit", ItemId: "apple"}); err != nil {
		t.Fatal(err)
	}
	list, err = hot.Hot(ctx, &likespb.HotRequest{Category: "fruit"})
	if err != nil {
		t.Fatal(err)
	}
	wantHot("hot fruit after RemoveItem", list)

	// A watcher of the veg category sees the likes of the client above.
	stream, err := hot.WatchHot(ctx, &likespb.HotRequest{Category: "veg", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	watch := streamReader(stream.Recv)
	wantHot("first veg list", nextMsg(t, "first veg list", watch))
	for _, step := range []struct {
		item string
		want []*likespb.ItemScore
	}{
		{"leek", []*likespb.ItemScore{{ItemId: "leek", Score: 1}}},
		{"kale", []*likespb.ItemScore{{ItemId: "kale", Score: 1}, {ItemId: "leek", Score: 1}}},
		{"bean", []*likespb.ItemScore{{ItemId: "bean", Score: 1}, {ItemId: "kale", Score: 1}}},
		{"bean", []*likespb.ItemScore{{ItemId: "bean", Score: 2}, {ItemId: "kale", Score: 1}}},
	} {
		like(step.item, "veg")
		wantHot("veg after liking "+step.item, nextMsg(t, "veg list", watch), step.want...)
	}
}

// settle reads statuses until none comes for d and returns the last one,
// or nil if none came.
func settle(t *testing.T, ch <-chan recvResult[*presencepb.OnlineStatus], d time.Duration) *presencepb.OnlineStatus {
	t.Helper()
	var last *presencepb.OnlineStatus
	for {
		timer := time.NewTimer(d)
		select {
		case r, ok := <-ch:
			timer.Stop()
			if !ok || r.err != nil {
				t.Fatalf("the monitor ended: %v", r.err)
			}
			last = r.msg
		case <-timer.C:
			return last
		}
	}
}
