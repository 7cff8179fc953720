package testkit_test

import (
	"errors"
	"testing"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/register"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func newRegister(t *testing.T, opts ...testkit.Option) *testkit.ValueEntity[*testpb.RegisterState] {
	t.Helper()
	r, err := testkit.NewValueEntity(register.New(), "r1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func process(t *testing.T, r *testkit.ValueEntity[*testpb.RegisterState], ops ...*testpb.RegisterOp) *testkit.ValueResult[*testpb.RegisterState] {
	t.Helper()
	res, err := testkit.CallValue[*testpb.RegisterState](r, "Process", &testpb.ProcessRegister{RegisterId: "r1", Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func expectStored(t *testing.T, r *testkit.ValueEntity[*testpb.RegisterState], want *testpb.RegisterState) {
	t.Helper()
	got, ok, err := r.Stored()
	if err != nil {
		t.Fatal(err)
	}
	if want == nil {
		if ok {
			t.Fatalf("stored %v, want nothing", got)
		}
		return
	}
	if !ok || !proto.Equal(got, want) {
		t.Fatalf("stored %v (%v), want %v", got, ok, want)
	}
}

func update(v string) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Update{Update: v}}
}

func TestValueUpdateAndDelete(t *testing.T) {
	r := newRegister(t)
	expectStored(t, r, nil)
	if got := r.State(); got.GetValue() != register.InitialValue {
		t.Fatalf("initial state %v", got)
	}

	res := process(t, r, update("a"), update("b"))
	want := &testpb.RegisterState{Value: "b", Writes: 2}
	if res.Failure != nil || !proto.Equal(res.Reply, want) || !proto.Equal(res.Updated, want) || res.Deleted {
		t.Fatalf("result %+v", res)
	}
	expectStored(t, r, want)
	if !proto.Equal(r.State(), want) {
		t.Fatalf("state %v", r.State())
	}

	// Reactivation starts from the stored value.
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(r.State(), want) {
		t.Fatalf("state after restart %v", r.State())
	}

	res = process(t, r, &testpb.RegisterOp{Op: &testpb.RegisterOp_Delete{Delete: true}})
	if !res.Deleted || res.Updated != nil {
		t.Fatalf("result %+v", res)
	}
	expectStored(t, r, nil)
	if got := r.State(); got.GetValue() != register.InitialValue {
		t.Fatalf("state after delete %v", got)
	}
}

func TestValueFailureKeepsTheValue(t *testing.T) {
	stored := &testpb.RegisterState{Value: "stored", Writes: 5}
	r := newRegister(t, testkit.WithValue(stored))
	res := process(t, r,
		&testpb.RegisterOp{Op: &testpb.RegisterOp_Mutate{Mutate: "scratch"}},
		update("lost"),
		&testpb.RegisterOp{Op: &testpb.RegisterOp_Effect{Effect: &testpb.RegisterEffect{RegisterId: "r2"}}},
		&testpb.RegisterOp{Op: &testpb.RegisterOp_Fail{Fail: "nope"}})
	if res.Failure == nil || res.Failure.Description != "nope" || res.Updated != nil || len(res.SideEffects) != 0 || res.Reply != nil {
		t.Fatalf("result %+v", res)
	}
	expectStored(t, r, stored)
	if !proto.Equal(r.State(), stored) {
		t.Fatalf("state %v", r.State())
	}
}

func TestValueForwardAndSideEffects(t *testing.T) {
	r := newRegister(t)
	res := process(t, r,
		&testpb.RegisterOp{Op: &testpb.RegisterOp_Effect{Effect: &testpb.RegisterEffect{RegisterId: "r2", Synchronous: true}}},
		&testpb.RegisterOp{Op: &testpb.RegisterOp_Forward{Forward: "r3"}})
	if res.Reply != nil || res.Forward == nil {
		t.Fatalf("result %+v", res)
	}
	if res.Forward.Service != register.ServiceName || res.Forward.Method != "Get" ||
		!proto.Equal(res.Forward.Message, &testpb.GetRegister{RegisterId: "r3"}) {
		t.Fatalf("forward %+v", res.Forward)
	}
	if len(res.SideEffects) != 1 || !res.SideEffects[0].Synchronous ||
		!proto.Equal(res.SideEffects[0].Message, &testpb.GetRegister{RegisterId: "r2"}) {
		t.Fatalf("side effects %+v", res.SideEffects)
	}
}

func TestValueMetadata(t *testing.T) {
	r := newRegister(t)
	var md sdk.Metadata
	md.Add("x-echo", "hello")
	res, err := testkit.CallValue[*testpb.RegisterState](r, "Process", &testpb.ProcessRegister{RegisterId: "r1"}, testkit.WithCommandMetadata(md))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.ReplyMetadata.Get("x-echo"); v != "hello" {
		t.Fatalf("reply metadata %v", res.ReplyMetadata)
	}
}

func TestValuePanicIsACrash(t *testing.T) {
	stored := &testpb.RegisterState{Value: "stored"}
	r := newRegister(t, testkit.WithValue(stored))
	_, err := testkit.CallValue[*emptypb.Empty](r, "Boom", &testpb.GetRegister{RegisterId: "r1"})
	if !errors.Is(err, testkit.ErrCrashed) {
		t.Fatalf("err %v, want ErrCrashed", err)
	}
	get, err := testkit.CallValue[*testpb.RegisterState](r, "Get", &testpb.GetRegister{RegisterId: "r1"})
	if err != nil || !proto.Equal(get.Reply, stored) {
		t.Fatalf("after crash: %v %+v", err, get)
	}
}

func TestValueInvalid(t *testing.T) {
	if _, err := testkit.NewValueEntity(register.New(), "r1", testkit.WithEvents(&emptypb.Empty{})); err == nil {
		t.Fatal("WithEvents was accepted for a value entity")
	}
	if _, err := testkit.NewValueEntity(register.New(), "r1", testkit.WithValue(&emptypb.Empty{})); err == nil {
		t.Fatal("a stored value of the wrong type was accepted")
	}
	if _, err := testkit.NewEventSourced(counter.New(), "c1", testkit.WithValue(&emptypb.Empty{})); err == nil {
		t.Fatal("WithValue was accepted for an event-sourced entity")
	}
	e := sdk.NewValueEntity[*testpb.RegisterState]("no.such.Service", nil)
	if _, err := testkit.NewValueEntity(e, "x"); err == nil {
		t.Fatal("an invalid entity was accepted")
	}
	r := newRegister(t)
	if _, err := testkit.CallValue[*emptypb.Empty](r, "Get", &testpb.GetRegister{RegisterId: "r1"}); err == nil {
		t.Fatal("a reply of the wrong type was accepted")
	}
}
