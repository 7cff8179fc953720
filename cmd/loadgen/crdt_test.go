package main

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestLikePayload(t *testing.T) {
	b, err := likeItem(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	num, typ, n := protowire.ConsumeTag(b)
	if num != 1 || typ != protowire.BytesType || n < 0 {
		t.Fatalf("tag = %d/%d", num, typ)
	}
	id, m := protowire.ConsumeString(b[n:])
	if m < 0 || id != "item-7" || n+m != len(b) {
		t.Fatalf("LikeRequest = %q (%d of %d bytes), want item_id item-7 alone", id, n+m, len(b))
	}
	if _, err := likeItem(7, 100); err == nil {
		t.Fatal("a padded LikeRequest was accepted")
	}
	if _, ok := findStack("likes/memory"); !ok {
		t.Fatal("the likes stack is not registered")
	}
}
