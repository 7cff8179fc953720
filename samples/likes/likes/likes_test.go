package likes_test

import (
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/likes/likes"
	pb "github.com/cloudstate-go/cloudstate/samples/likes/likespb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func expect(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func pnDelta(n int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: n}}}
}

func TestLikes(t *testing.T) {
	e, err := testkit.NewCRDT(likes.NewLikes(), "apple")
	if err != nil {
		t.Fatal(err)
	}
	res, err := testkit.CallCRDT[*pb.LikeCount](e, "GetLikes", &pb.GetLikesRequest{ItemId: "apple"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, res.Reply, &pb.LikeCount{ItemId: "apple"})
	if res.Delta != nil || e.State() != nil {
		t.Fatalf("reading created the counter: %v", res.Delta)
	}

	res, err = testkit.CallCRDT[*pb.LikeCount](e, "Unlike", &pb.LikeRequest{ItemId: "apple"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Description != "Item apple has no likes" {
		t.Fatalf("unlike without likes: %+v", res)
	}

	res, err = testkit.CallCRDT[*pb.LikeCount](e, "Like", &pb.LikeRequest{ItemId: "apple", Category: "fruit"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, res.Reply, &pb.LikeCount{ItemId: "apple", Likes: 1})
	expect(t, res.Delta, pnDelta(1))
	if len(res.SideEffects) != 1 || res.SideEffects[0].Service != likes.HotItemsService || res.SideEffects[0].Method != "Score" || !res.SideEffects[0].Synchronous {
		t.Fatalf("side effects %+v", res.SideEffects)
	}
	expect(t, res.SideEffects[0].Message, &pb.ScoreRequest{Category: "fruit", ItemId: "apple", Change: 1})

	// Likes from other nodes arrive as deltas.
	if err := e.Delta(pnDelta(4)); err != nil {
		t.Fatal(err)
	}
	res, err = testkit.CallCRDT[*pb.LikeCount](e, "Unlike", &pb.LikeRequest{ItemId: "apple"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, res.Reply, &pb.LikeCount{ItemId: "apple", Likes: 4})
	expect(t, res.Delta, pnDelta(-1))
	if len(res.SideEffects) != 0 {
		t.Fatalf("unlike without a category has side effects %+v", res.SideEffects)
	}
}

func score(t *testing.T, e *testkit.CRDT, item string, change int64) *testkit.CRDTResult[*emptypb.Empty] {
	t.Helper()
	res, err := testkit.CallCRDT[*emptypb.Empty](e, "Score", &pb.ScoreRequest{Category: "fruit", ItemId: item, Change: change})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil {
		t.Fatalf("score %s: %s", item, res.Failure.Description)
	}
	return res
}

func hot(t *testing.T, e *testkit.CRDT, limit int32) *pb.HotList {
	t.Helper()
	res, err := testkit.CallCRDT[*pb.HotList](e, "Hot", &pb.HotRequest{Category: "fruit", Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delta != nil {
		t.Fatalf("Hot changed the map: %v", res.Delta)
	}
	return res.Reply
}

func items(scores ...any) *pb.HotList {
	l := &pb.HotList{Category: "fruit"}
	for i := 0; i < len(scores); i += 2 {
		l.Items = append(l.Items, &pb.ItemScore{ItemId: scores[i].(string), Score: int64(scores[i+1].(int))})
	}
	return l
}

func mapDelta(updated, added map[string]int64, removed ...string) *protocol.CrdtDelta {
	md := &protocol.ORMapDelta{}
	for _, r := range removed {
		md.Removed = append(md.Removed, sdk.String(r))
	}
	for k, v := range updated {
		md.Updated = append(md.Updated, &protocol.ORMapEntryDelta{Key: sdk.String(k), Delta: pnDelta(v)})
	}
	for k, v := range added {
		md.Added = append(md.Added, &protocol.ORMapEntryDelta{Key: sdk.String(k), Delta: pnDelta(v)})
	}
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: md}}
}

func TestHotItems(t *testing.T) {
	e, err := testkit.NewCRDT(likes.NewHotItems(), "fruit")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, hot(t, e, 0), items())

	expect(t, score(t, e, "apple", 2).Delta, mapDelta(nil, map[string]int64{"apple": 2}))
	expect(t, score(t, e, "pear", 1).Delta, mapDelta(nil, map[string]int64{"pear": 1}))
	expect(t, score(t, e, "apple", 1).Delta, mapDelta(map[string]int64{"apple": 1}, nil))
	expect(t, hot(t, e, 0), items("apple", 3, "pear", 1))
	expect(t, hot(t, e, 1), items("apple", 3))

	// A score of 0 removes the item; a new item with no score is not added.
	expect(t, score(t, e, "pear", -1).Delta, mapDelta(nil, nil, "pear"))
	if res := score(t, e, "plum", -1); res.Delta != nil {
		t.Fatalf("a negative new score sent %v", res.Delta)
	}
	expect(t, hot(t, e, 0), items("apple", 3))

	res, err := testkit.CallCRDT[*emptypb.Empty](e, "RemoveItem", &pb.RemoveItemRequest{Category: "fruit", ItemId: "apple"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, res.Delta, mapDelta(nil, nil, "apple"))
	expect(t, hot(t, e, 0), items())
}

func TestWatchHot(t *testing.T) {
	e, err := testkit.NewCRDT(likes.NewHotItems(), "fruit",
		testkit.WithCRDTValue(mapDelta(nil, map[string]int64{"apple": 5})))
	if err != nil {
		t.Fatal(err)
	}
	w, err := testkit.StreamCRDT[*pb.HotList](e, "WatchHot", &pb.HotRequest{Category: "fruit", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w.Result.Reply, items("apple", 5))

	// Below the top of the list: nothing to send.
	score(t, e, "pear", 3)
	if msgs, err := w.Messages(); err != nil || len(msgs) != 0 {
		t.Fatalf("messages %v, %v", msgs, err)
	}
	// Another node's likes put pear on top.
	if err := e.Delta(mapDelta(map[string]int64{"pear": 4}, nil)); err != nil {
		t.Fatal(err)
	}
	replies, err := w.Replies()
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 1 {
		t.Fatalf("replies %v", replies)
	}
	expect(t, replies[0], items("pear", 7))
	if !w.Open() {
		t.Fatal("watch ended")
	}
}
