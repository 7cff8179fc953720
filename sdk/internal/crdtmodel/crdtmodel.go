// Package crdtmodel is the CRDT entity the SDK's own tests run, following
// the rules of the Cloudstate TCK's CRDT model (PROTOCOL.md §8.4): the CRDT
// type is the entity id's prefix, Process applies a list of actions and
// returns the state, ProcessStreamed pushes the state on every change.
package crdtmodel

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/crdtpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Service names.
const (
	ServiceName    = "cloudstate.sdktest.crdt.CrdtModel"
	TwoServiceName = "cloudstate.sdktest.crdt.CrdtTwo"
)

// New returns the model entity.
func New() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(ServiceName)
	sdk.OnCRDTCommand(e, "Process", func(ctx *sdk.CRDTContext, in *crdtpb.Request) (*crdtpb.Response, error) {
		forwarded := false
		for _, a := range in.GetActions() {
			switch a := a.GetAction().(type) {
			case *crdtpb.RequestAction_Update:
				if err := applyUpdate(ctx, ctx.EntityID(), a.Update); err != nil {
					return nil, err
				}
				ctx.SetWriteConsistency(sdk.WriteConsistency(a.Update.GetWriteConsistency()))
			case *crdtpb.RequestAction_Delete:
				ctx.Delete()
			case *crdtpb.RequestAction_Forward:
				ctx.Forward(TwoServiceName, "Call", &crdtpb.Request{Id: a.Forward.GetId()})
				forwarded = true
			case *crdtpb.RequestAction_Fail:
				return nil, ctx.Fail("%s", a.Fail.GetMessage())
			case *crdtpb.RequestAction_Effect:
				ctx.SideEffect(TwoServiceName, "Call", &crdtpb.Request{Id: a.Effect.GetId()}, a.Effect.GetSynchronous())
			case *crdtpb.RequestAction_Panic:
				panic("model panic")
			}
		}
		if ctx.Streamed() {
			return nil, fmt.Errorf("Process is not streamed")
		}
		if forwarded {
			return nil, nil
		}
		return &crdtpb.Response{State: stateOf(ctx, ctx.EntityID())}, nil
	})
	sdk.OnCRDTStreamed(e, "ProcessStreamed", func(ctx *sdk.CRDTStreamContext[*crdtpb.Response], in *crdtpb.StreamedRequest) (*crdtpb.Response, error) {
		id := ctx.EntityID()
		ctx.OnChange(func(cc *sdk.CRDTChangeContext) (*crdtpb.Response, error) {
			if in.GetPanicOnChange() {
				panic("model panic on change")
			}
			if u := in.GetChangeUpdate(); u != nil {
				if err := applyUpdate(cc, id, u); err != nil {
					return nil, err
				}
			}
			for _, ef := range in.GetEffects() {
				cc.SideEffect(TwoServiceName, "Call", &crdtpb.Request{Id: ef.GetId()}, ef.GetSynchronous())
			}
			state := stateOf(cc, id)
			if in.GetEndState() != nil && proto.Equal(state, in.GetEndState()) {
				cc.EndStream()
			}
			if in.GetEmpty() {
				return nil, nil
			}
			return &crdtpb.Response{State: state}, nil
		})
		if u := in.GetCancelUpdate(); u != nil || in.GetFailOnCancel() {
			ctx.OnCancel(func(cc *sdk.CRDTCancelContext) error {
				if u != nil {
					if err := applyUpdate(cc, id, u); err != nil {
						return err
					}
					cc.SetWriteConsistency(sdk.WriteConsistency(u.GetWriteConsistency()))
				}
				if in.GetFailOnCancel() {
					return fmt.Errorf("cancel failed on purpose")
				}
				return nil
			})
		}
		if u := in.GetInitialUpdate(); u != nil {
			if err := applyUpdate(ctx, id, u); err != nil {
				return nil, err
			}
			ctx.SetWriteConsistency(sdk.WriteConsistency(u.GetWriteConsistency()))
		}
		if in.GetEmpty() {
			return nil, nil
		}
		return &crdtpb.Response{State: stateOf(ctx, id)}, nil
	})
	return e
}

// NewTwo returns the target of forwards and side effects: it replies with
// an empty response and deletes its CRDT when asked to.
func NewTwo() *sdk.CRDTEntity {
	e := sdk.NewCRDTEntity(TwoServiceName)
	sdk.OnCRDTCommand(e, "Call", func(ctx *sdk.CRDTContext, in *crdtpb.Request) (*crdtpb.Response, error) {
		for _, a := range in.GetActions() {
			if a.GetDelete() != nil {
				ctx.Delete()
			}
		}
		return &crdtpb.Response{}, nil
	})
	return e
}

// accessor is what every CRDT context offers.
type accessor interface {
	GCounter() *sdk.GCounter
	PNCounter() *sdk.PNCounter
	GSet() *sdk.GSet
	ORSet() *sdk.ORSet
	LWWRegister() *sdk.LWWRegister
	Flag() *sdk.Flag
	ORMap() *sdk.ORMap
	Vote() *sdk.Vote
}

// container gives the CRDT of a name: the entity's, or an ORMap value.
type container struct {
	root accessor
	m    *sdk.ORMap
	key  string
}

func (c container) kind() string {
	kind, _, _ := strings.Cut(c.key, "-")
	return kind
}

func (c container) gcounter() *sdk.GCounter {
	if c.m != nil {
		return c.m.GCounter(sdk.String(c.key))
	}
	return c.root.GCounter()
}

func (c container) pncounter() *sdk.PNCounter {
	if c.m != nil {
		return c.m.PNCounter(sdk.String(c.key))
	}
	return c.root.PNCounter()
}

func (c container) gset() *sdk.GSet {
	if c.m != nil {
		return c.m.GSet(sdk.String(c.key))
	}
	return c.root.GSet()
}

func (c container) orset() *sdk.ORSet {
	if c.m != nil {
		return c.m.ORSet(sdk.String(c.key))
	}
	return c.root.ORSet()
}

func (c container) lwwregister() *sdk.LWWRegister {
	if c.m != nil {
		return c.m.LWWRegister(sdk.String(c.key))
	}
	return c.root.LWWRegister()
}

func (c container) flag() *sdk.Flag {
	if c.m != nil {
		return c.m.Flag(sdk.String(c.key))
	}
	return c.root.Flag()
}

func (c container) ormap() *sdk.ORMap {
	if c.m != nil {
		return c.m.ORMap(sdk.String(c.key))
	}
	return c.root.ORMap()
}

func (c container) vote() *sdk.Vote {
	if c.m != nil {
		return c.m.Vote(sdk.String(c.key))
	}
	return c.root.Vote()
}

func applyUpdate(a accessor, id string, u *crdtpb.Update) error {
	return container{root: a, key: id}.apply(u)
}

// apply applies u to the CRDT of c; the update must match its type.
func (c container) apply(u *crdtpb.Update) error {
	kind := c.kind()
	switch u := u.GetUpdate().(type) {
	case *crdtpb.Update_Gcounter:
		if kind != "GCounter" {
			break
		}
		c.gcounter().Increment(u.Gcounter.GetIncrement())
		return nil
	case *crdtpb.Update_Pncounter:
		if kind != "PNCounter" {
			break
		}
		c.pncounter().Increment(u.Pncounter.GetChange())
		return nil
	case *crdtpb.Update_Gset:
		if kind != "GSet" {
			break
		}
		c.gset().Add(sdk.String(u.Gset.GetAdd()))
		return nil
	case *crdtpb.Update_Orset:
		if kind != "ORSet" {
			break
		}
		s := c.orset()
		switch a := u.Orset.GetAction().(type) {
		case *crdtpb.ORSetUpdate_Add:
			s.Add(sdk.String(a.Add))
		case *crdtpb.ORSetUpdate_Remove:
			s.Remove(sdk.String(a.Remove))
		case *crdtpb.ORSetUpdate_Clear:
			s.Clear()
		}
		return nil
	case *crdtpb.Update_Lwwregister:
		if kind != "LWWRegister" {
			break
		}
		clock := u.Lwwregister.GetClock()
		c.lwwregister().SetWithClock(sdk.String(u.Lwwregister.GetValue()), sdk.Clock(clock.GetClockType()), clock.GetCustomClockValue())
		return nil
	case *crdtpb.Update_Flag:
		if kind != "Flag" {
			break
		}
		c.flag().Enable()
		return nil
	case *crdtpb.Update_Ormap:
		if kind != "ORMap" {
			break
		}
		m := c.ormap()
		switch a := u.Ormap.GetAction().(type) {
		case *crdtpb.ORMapUpdate_Add:
			return container{m: m, key: a.Add}.create()
		case *crdtpb.ORMapUpdate_Update:
			return container{m: m, key: a.Update.GetKey()}.apply(a.Update.GetUpdate())
		case *crdtpb.ORMapUpdate_Remove:
			m.Delete(sdk.String(a.Remove))
		case *crdtpb.ORMapUpdate_Clear:
			m.Clear()
		}
		return nil
	case *crdtpb.Update_Vote:
		if kind != "Vote" {
			break
		}
		c.vote().Vote(u.Vote.GetSelfVote())
		return nil
	default:
		return fmt.Errorf("empty update for %s", c.key)
	}
	return fmt.Errorf("update %T does not apply to %s", u.GetUpdate(), c.key)
}

// create adds an empty value for c's key to its map.
func (c container) create() error {
	switch c.kind() {
	case "GCounter":
		c.gcounter()
	case "PNCounter":
		c.pncounter()
	case "GSet":
		c.gset()
	case "ORSet":
		c.orset()
	case "LWWRegister":
		c.lwwregister().Set(sdk.String(""))
	case "Flag":
		c.flag()
	case "ORMap":
		c.ormap()
	case "Vote":
		c.vote()
	default:
		return fmt.Errorf("unknown CRDT type in key %q", c.key)
	}
	return nil
}

func stateOf(a accessor, id string) *crdtpb.State {
	return container{root: a, key: id}.state()
}

func (c container) state() *crdtpb.State {
	switch c.kind() {
	case "GCounter":
		return &crdtpb.State{Value: &crdtpb.State_Gcounter{Gcounter: &crdtpb.GCounterValue{Value: c.gcounter().Value()}}}
	case "PNCounter":
		return &crdtpb.State{Value: &crdtpb.State_Pncounter{Pncounter: &crdtpb.PNCounterValue{Value: c.pncounter().Value()}}}
	case "GSet":
		return &crdtpb.State{Value: &crdtpb.State_Gset{Gset: &crdtpb.GSetValue{Elements: strs(c.gset().Elements())}}}
	case "ORSet":
		return &crdtpb.State{Value: &crdtpb.State_Orset{Orset: &crdtpb.ORSetValue{Elements: strs(c.orset().Elements())}}}
	case "LWWRegister":
		v := ""
		if a := c.lwwregister().Value(); a != nil {
			v, _ = sdk.StringValue(a)
		}
		return &crdtpb.State{Value: &crdtpb.State_Lwwregister{Lwwregister: &crdtpb.LWWRegisterValue{Value: v}}}
	case "Flag":
		return &crdtpb.State{Value: &crdtpb.State_Flag{Flag: &crdtpb.FlagValue{Value: c.flag().Value()}}}
	case "ORMap":
		m := c.ormap()
		v := &crdtpb.ORMapValue{}
		for _, k := range strs(m.Keys()) {
			v.Entries = append(v.Entries, &crdtpb.ORMapEntryValue{Key: k, Value: container{m: m, key: k}.state()})
		}
		return &crdtpb.State{Value: &crdtpb.State_Ormap{Ormap: v}}
	case "Vote":
		v := c.vote()
		return &crdtpb.State{Value: &crdtpb.State_Vote{Vote: &crdtpb.VoteValue{
			SelfVote: v.SelfVote(), VotesFor: v.VotesFor(), TotalVoters: v.TotalVoters(),
		}}}
	}
	return &crdtpb.State{}
}

// strs decodes string elements and keys, sorted.
func strs(as []*anypb.Any) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		s, err := sdk.StringValue(a)
		if err != nil {
			s = a.String()
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
