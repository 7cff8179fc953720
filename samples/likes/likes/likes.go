// Package likes is the likes sample's entities: a PNCounter of likes per
// item (Likes), and per category an ORMap from item id to a PNCounter score
// (HotItems), which Likes keeps up to date with side effects.
package likes

import (
	"cmp"
	"slices"

	pb "github.com/cloudstate-go/cloudstate/samples/likes/likespb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Service names.
const (
	LikesService    = "com.example.likes.Likes"
	HotItemsService = "com.example.likes.HotItems"
)

// defaultLimit is the length of a hot list when the request names none.
const defaultLimit = 10

// NewLikes returns the Likes entity: one PNCounter per item.
func NewLikes() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(LikesService, sdk.WithPersistenceID("likes"))
	sdk.OnCRDTCommand(e, "Like", func(ctx *sdk.CRDTContext, in *pb.LikeRequest) (*pb.LikeCount, error) {
		return like(ctx, in, 1)
	})
	sdk.OnCRDTCommand(e, "Unlike", func(ctx *sdk.CRDTContext, in *pb.LikeRequest) (*pb.LikeCount, error) {
		if ctx.PNCounter().Value() <= 0 {
			return nil, ctx.Fail("Item %s has no likes", in.GetItemId())
		}
		return like(ctx, in, -1)
	})
	sdk.OnCRDTCommand(e, "GetLikes", func(ctx *sdk.CRDTContext, in *pb.GetLikesRequest) (*pb.LikeCount, error) {
		// Reading a counter the item does not have yet creates nothing.
		return &pb.LikeCount{ItemId: in.GetItemId(), Likes: ctx.PNCounter().Value()}, nil
	})
	return e
}

func like(ctx *sdk.CRDTContext, in *pb.LikeRequest, change int64) (*pb.LikeCount, error) {
	likes := ctx.PNCounter()
	likes.Increment(change)
	if in.GetCategory() != "" {
		// Synchronous, so that the hot list shows the like by the time
		// the client has its answer.
		ctx.SideEffect(HotItemsService, "Score", &pb.ScoreRequest{
			Category: in.GetCategory(), ItemId: in.GetItemId(), Change: change,
		}, true)
	}
	return &pb.LikeCount{ItemId: in.GetItemId(), Likes: likes.Value()}, nil
}

// NewHotItems returns the HotItems entity: per category, an ORMap from item
// id (a string key) to the item's score (a PNCounter).
func NewHotItems() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(HotItemsService, sdk.WithPersistenceID("hot-items"))
	sdk.OnCRDTCommand(e, "Score", func(ctx *sdk.CRDTContext, in *pb.ScoreRequest) (*emptypb.Empty, error) {
		if in.GetItemId() == "" {
			return nil, ctx.Fail("An item id is required")
		}
		items := ctx.ORMap()
		key := sdk.String(in.GetItemId())
		score := items.PNCounter(key)
		score.Increment(in.GetChange())
		if score.Value() <= 0 {
			items.Delete(key)
		}
		return &emptypb.Empty{}, nil
	})
	sdk.OnCRDTCommand(e, "Hot", func(ctx *sdk.CRDTContext, in *pb.HotRequest) (*pb.HotList, error) {
		return hotList(ctx.ORMap(), in), nil
	})
	sdk.OnCRDTCommand(e, "RemoveItem", func(ctx *sdk.CRDTContext, in *pb.RemoveItemRequest) (*emptypb.Empty, error) {
		ctx.ORMap().Delete(sdk.String(in.GetItemId()))
		return &emptypb.Empty{}, nil
	})
	sdk.OnCRDTStreamed(e, "WatchHot", func(ctx *sdk.CRDTStreamContext[*pb.HotList], in *pb.HotRequest) (*pb.HotList, error) {
		last := hotList(ctx.ORMap(), in)
		ctx.OnChange(func(ctx *sdk.CRDTChangeContext) (*pb.HotList, error) {
			now := hotList(ctx.ORMap(), in)
			if proto.Equal(now, last) {
				return nil, nil // a change below the top of the list
			}
			last = now
			return now, nil
		})
		return last, nil
	})
	return e
}

// hotList lists the category's items by score.
func hotList(items *sdk.ORMap, in *pb.HotRequest) *pb.HotList {
	list := &pb.HotList{Category: in.GetCategory()}
	for _, en := range items.Entries() {
		id, err := sdk.StringValue(en.Key)
		if err != nil {
			continue // not a key this entity wrote
		}
		score, ok := en.Value.(*sdk.PNCounter)
		if !ok {
			continue
		}
		list.Items = append(list.Items, &pb.ItemScore{ItemId: id, Score: score.Value()})
	}
	slices.SortFunc(list.Items, func(a, b *pb.ItemScore) int {
		if c := cmp.Compare(b.GetScore(), a.GetScore()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetItemId(), b.GetItemId())
	})
	limit := int(in.GetLimit())
	if limit <= 0 {
		limit = defaultLimit
	}
	if len(list.Items) > limit {
		list.Items = list.Items[:limit]
	}
	return list
}
