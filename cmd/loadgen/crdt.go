package main

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// CRDT scenario: Likes/Like of the likes sample, one PNCounter increment
// per call (no category, so no side effect), spread over 1000 items.
//
// `loadgen bench --scenarios echo,crdt-like` measures it against the floor
// in the same interleaved rounds.
const likeMethod = "/com.example.likes.Likes/Like"

func init() {
	stacks = append(stacks, stack{name: "likes/memory", function: "./samples/likes"})
	payloads["like"] = likeItem
	scenarios = append(scenarios, scenario{name: "crdt-like", title: "CRDT PNCounter increment (Likes/Like) via proxy",
		stack: "likes/memory", method: likeMethod, payload: "like", carts: 1000})
}

// likeItem encodes com.example.likes.LikeRequest{item_id: "item-<i>"}. It
// cannot be padded: its only other field, category, would add a side
// effect to every call.
func likeItem(item, size int) ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "item-"+strconv.Itoa(item))
	if size > 0 && size != len(b) {
		return nil, fmt.Errorf("a LikeRequest cannot be padded (it is %d bytes)", len(b))
	}
	return b, nil
}
