// Package presence is the chat presence entity: a Vote CRDT per user,
// whose vote on this node is yes while the user has a connection open here.
package presence

import (
	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ServiceName is the presence service.
const ServiceName = "com.example.chat.presence.Presence"

// New returns the presence entity.
func New() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(ServiceName, sdk.WithPersistenceID("presence"))

	sdk.OnCRDTStreamed(e, "Connect", func(ctx *sdk.CRDTStreamContext[*emptypb.Empty], in *pb.User) (*emptypb.Empty, error) {
		if !ctx.Streamed() {
			return nil, ctx.Fail("Connect must be called as a stream")
		}
		// Voting yes again for a second connection changes nothing.
		ctx.Vote().Vote(true)
		// The open Connect streams of this activation are the user's
		// connections on this node: the vote stays yes until the last one
		// goes away.
		ctx.OnCancel(func(ctx *sdk.CRDTCancelContext) error {
			if ctx.OpenStreams("Connect") == 0 {
				ctx.Vote().Vote(false)
			}
			return nil
		})
		return nil, nil
	})

	sdk.OnCRDTStreamed(e, "Monitor", func(ctx *sdk.CRDTStreamContext[*pb.OnlineStatus], in *pb.User) (*pb.OnlineStatus, error) {
		online := ctx.Vote().AtLeastOne()
		// Every change of the vote runs this; only a change of the status
		// is worth a message (another connection, or another node voting,
		// is not).
		ctx.OnChange(func(ctx *sdk.CRDTChangeContext) (*pb.OnlineStatus, error) {
			now := ctx.Vote().AtLeastOne()
			if now == online {
				return nil, nil
			}
			online = now
			return &pb.OnlineStatus{Online: now}, nil
		})
		return &pb.OnlineStatus{Online: online}, nil
	})
	return e
}
