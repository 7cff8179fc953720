// Command testfunction is the user function of the CRDT end-to-end tests:
// one CRDT entity per id (crdttestpb/crdttest.proto) whose CRDT may be any
// of the eight types, so that each type can be changed and read back
// through the proxy, deleted, and watched. Every state it returns carries
// the command's id on the entity's stream, so tests can see passivation
// from outside. It listens on $HOST:$PORT like any Cloudstate function.
package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/sdk"
	pb "github.com/cloudstate-go/cloudstate/test/crdt/testfunction/crdttestpb"
)

// ServiceName is the test function's service.
const ServiceName = "cloudstate.crdttest.CrdtTypes"

func main() {
	if err := run(); err != nil {
		slog.Error("CRDT test function failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := sdk.NewServer(sdk.WithServiceName("crdt-test-function"), sdk.WithServiceVersion("0.0.1"), sdk.WithLogger(logger))
	if err := srv.RegisterCRDT(newEntity()); err != nil {
		return err
	}
	logger.Info("CRDT test function listening", "addr", sdk.Addr())
	return srv.ListenAndServe(ctx, sdk.Addr())
}

// access is what every CRDT context offers: the entity's CRDT, by type.
type access interface {
	State() sdk.CRDT
	GCounter() *sdk.GCounter
	PNCounter() *sdk.PNCounter
	GSet() *sdk.GSet
	ORSet() *sdk.ORSet
	LWWRegister() *sdk.LWWRegister
	Flag() *sdk.Flag
	ORMap() *sdk.ORMap
	Vote() *sdk.Vote
}

func newEntity() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(ServiceName, sdk.WithPersistenceID("crdt-types"))
	sdk.OnCRDTCommand(e, "Change", func(ctx *sdk.CRDTContext, in *pb.ChangeRequest) (*pb.State, error) {
		if err := change(ctx, in); err != nil {
			return nil, err
		}
		if in.GetFail() != "" {
			return nil, ctx.Fail("%s", in.GetFail())
		}
		return state(ctx, ctx.CommandID())
	})
	sdk.OnCRDTCommand(e, "Get", func(ctx *sdk.CRDTContext, in *pb.Key) (*pb.State, error) {
		return state(ctx, ctx.CommandID())
	})
	sdk.OnCRDTCommand(e, "Delete", func(ctx *sdk.CRDTContext, in *pb.Key) (*emptypb.Empty, error) {
		ctx.Delete()
		return &emptypb.Empty{}, nil
	})
	sdk.OnCRDTStreamed(e, "Watch", func(ctx *sdk.CRDTStreamContext[*pb.State], in *pb.Key) (*pb.State, error) {
		id := ctx.CommandID()
		ctx.OnChange(func(ctx *sdk.CRDTChangeContext) (*pb.State, error) {
			return state(ctx, id)
		})
		return state(ctx, id)
	})
	return e
}

// change applies in's change to the entity's CRDT.
func change(ctx *sdk.CRDTContext, in *pb.ChangeRequest) error {
	switch c := in.GetChange().(type) {
	case *pb.ChangeRequest_GcounterIncrement:
		ctx.GCounter().Increment(c.GcounterIncrement)
	case *pb.ChangeRequest_PncounterChange:
		ctx.PNCounter().Increment(c.PncounterChange)
	case *pb.ChangeRequest_GsetAdd:
		ctx.GSet().Add(sdk.String(c.GsetAdd))
	case *pb.ChangeRequest_OrsetAdd:
		ctx.ORSet().Add(sdk.String(c.OrsetAdd))
	case *pb.ChangeRequest_OrsetRemove:
		ctx.ORSet().Remove(sdk.String(c.OrsetRemove))
	case *pb.ChangeRequest_OrsetClear:
		if c.OrsetClear {
			ctx.ORSet().Clear()
		}
	case *pb.ChangeRequest_LwwregisterSet:
		ctx.LWWRegister().Set(sdk.String(c.LwwregisterSet))
	case *pb.ChangeRequest_FlagEnable:
		if c.FlagEnable {
			ctx.Flag().Enable()
		}
	case *pb.ChangeRequest_Vote:
		ctx.Vote().Vote(c.Vote)
	case *pb.ChangeRequest_OrmapChange:
		key := sdk.String(c.OrmapChange.GetKey())
		switch v := c.OrmapChange.GetValue().(type) {
		case *pb.MapChange_CounterChange:
			ctx.ORMap().PNCounter(key).Increment(v.CounterChange)
		case *pb.MapChange_RegisterSet:
			ctx.ORMap().LWWRegister(key).Set(sdk.String(v.RegisterSet))
		default:
			return ctx.Fail("a map change needs a value")
		}
	case *pb.ChangeRequest_OrmapRemove:
		ctx.ORMap().Delete(sdk.String(c.OrmapRemove))
	default:
		return ctx.Fail("no change")
	}
	return nil
}

// state describes the entity's CRDT.
func state(a access, commandID int64) (*pb.State, error) {
	s := &pb.State{CommandId: commandID}
	c := a.State()
	if c == nil {
		return s, nil
	}
	s.Type = c.Kind().String()
	switch c := c.(type) {
	case *sdk.GCounter:
		s.Gcounter = c.Value()
	case *sdk.PNCounter:
		s.Pncounter = c.Value()
	case *sdk.GSet:
		els, err := decodeStrings(c.Elements())
		if err != nil {
			return nil, err
		}
		s.Elements = els
	case *sdk.ORSet:
		els, err := decodeStrings(c.Elements())
		if err != nil {
			return nil, err
		}
		s.Elements = els
	case *sdk.LWWRegister:
		if v := c.Value(); v != nil {
			str, err := sdk.StringValue(v)
			if err != nil {
				return nil, fmt.Errorf("register value: %w", err)
			}
			s.Register = str
		}
	case *sdk.Flag:
		s.Flag = c.Value()
	case *sdk.Vote:
		s.Vote = &pb.VoteState{SelfVote: c.SelfVote(), VotesFor: c.VotesFor(), TotalVoters: c.TotalVoters()}
	case *sdk.ORMap:
		for _, e := range c.Entries() {
			key, err := sdk.StringValue(e.Key)
			if err != nil {
				return nil, fmt.Errorf("map key: %w", err)
			}
			entry := &pb.MapEntry{Key: key}
			switch v := e.Value.(type) {
			case *sdk.PNCounter:
				entry.Counter = v.Value()
			case *sdk.LWWRegister:
				if r := v.Value(); r != nil {
					if entry.Register, err = sdk.StringValue(r); err != nil {
						return nil, fmt.Errorf("map value of %s: %w", key, err)
					}
				}
			}
			s.Entries = append(s.Entries, entry)
		}
		slices.SortFunc(s.Entries, func(a, b *pb.MapEntry) int { return cmp.Compare(a.GetKey(), b.GetKey()) })
	}
	return s, nil
}

// decodeStrings decodes set elements written with sdk.String, sorted as
// strings (Elements sorts them by their encoding).
func decodeStrings(els []*anypb.Any) ([]string, error) {
	out := make([]string, 0, len(els))
	for _, el := range els {
		s, err := sdk.StringValue(el)
		if err != nil {
			return nil, fmt.Errorf("set element: %w", err)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}
