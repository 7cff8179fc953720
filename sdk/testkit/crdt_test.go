package testkit_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/crdtmodel"
	pb "github.com/cloudstate-go/cloudstate/sdk/internal/crdtpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

func newModel(t *testing.T, id string, opts ...testkit.Option) *testkit.CRDT {
	t.Helper()
	e, err := testkit.NewCRDT(crdtmodel.New(), id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func modelProcess(t *testing.T, e *testkit.CRDT, id string, actions ...*pb.RequestAction) *testkit.CRDTResult[*pb.Response] {
	t.Helper()
	res, err := testkit.CallCRDT[*pb.Response](e, "Process", &pb.Request{Id: id, Actions: actions})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func pnChange(n int64) *pb.RequestAction {
	return &pb.RequestAction{Action: &pb.RequestAction_Update{Update: &pb.Update{Update: &pb.Update_Pncounter{Pncounter: &pb.PNCounterUpdate{Change: n}}}}}
}

func pnState(v int64) *pb.Response {
	return &pb.Response{State: &pb.State{Value: &pb.State_Pncounter{Pncounter: &pb.PNCounterValue{Value: v}}}}
}

func pnDelta(n int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: n}}}
}

func expectMsg(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func TestCRDTCallAndValue(t *testing.T) {
	e := newModel(t, "PNCounter-1", testkit.WithCRDTValue(pnDelta(10)))
	if c := e.State().(*sdk.PNCounter); c.Value() != 10 {
		t.Fatalf("initial value %d", c.Value())
	}
	res := modelProcess(t, e, "PNCounter-1", pnChange(-3))
	expectMsg(t, res.Reply, pnState(7))
	expectMsg(t, res.Delta, pnDelta(-3))
	if res.Deleted || res.WriteConsistency != sdk.WriteLocal || res.Failure != nil {
		t.Fatalf("result %+v", res)
	}

	// Reading sends nothing.
	res = modelProcess(t, e, "PNCounter-1")
	if res.Delta != nil {
		t.Fatalf("read sent %v", res.Delta)
	}
	// A delta from elsewhere, then a restart from the value.
	if err := e.Delta(pnDelta(5)); err != nil {
		t.Fatal(err)
	}
	if err := e.Restart(); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, modelProcess(t, e, "PNCounter-1").Reply, pnState(12))
}

func TestCRDTFailureAndCrash(t *testing.T) {
	e := newModel(t, "PNCounter-1")
	modelProcess(t, e, "PNCounter-1", pnChange(1))
	res := modelProcess(t, e, "PNCounter-1", pnChange(5), &pb.RequestAction{Action: &pb.RequestAction_Fail{Fail: &pb.Fail{Message: "nope"}}})
	if res.Failure == nil || res.Failure.Description != "nope" || res.Delta != nil {
		t.Fatalf("result %+v", res)
	}
	_, err := testkit.CallCRDT[*pb.Response](e, "Process", &pb.Request{Id: "PNCounter-1", Actions: []*pb.RequestAction{
		pnChange(5), {Action: &pb.RequestAction_Panic{Panic: true}},
	}})
	if !errors.Is(err, testkit.ErrCrashed) {
		t.Fatalf("panic gave %v, want ErrCrashed", err)
	}
	expectMsg(t, modelProcess(t, e, "PNCounter-1").Reply, pnState(1))
}

func TestCRDTStreams(t *testing.T) {
	const id = "PNCounter-1"
	e := newModel(t, id)
	s1, err := testkit.StreamCRDT[*pb.Response](e, "ProcessStreamed", &pb.StreamedRequest{
		Id: id, InitialUpdate: &pb.Update{Update: &pb.Update_Pncounter{Pncounter: &pb.PNCounterUpdate{Change: 1}}},
		CancelUpdate: &pb.Update{Update: &pb.Update_Pncounter{Pncounter: &pb.PNCounterUpdate{Change: -1}}},
		Effects:      []*pb.Effect{{Id: "fx"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	expectMsg(t, s1.Result.Reply, pnState(1))
	expectMsg(t, s1.Result.Delta, pnDelta(1))
	if !s1.Open() {
		t.Fatal("stream 1 closed")
	}
	s2, err := testkit.StreamCRDT[*pb.Response](e, "ProcessStreamed", &pb.StreamedRequest{
		Id: id, EndState: pnState(5).GetState(),
	})
	if err != nil {
		t.Fatal(err)
	}
	expectMsg(t, s2.Result.Reply, pnState(1))

	if err := e.Delta(pnDelta(2)); err != nil {
		t.Fatal(err)
	}
	msgs, err := s1.Messages()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].EndStream || len(msgs[0].SideEffects) != 1 || msgs[0].SideEffects[0].Service != crdtmodel.TwoServiceName {
		t.Fatalf("stream 1 messages %+v", msgs)
	}
	expectMsg(t, msgs[0].Reply, pnState(3))

	// Another command's change reaches both streams; the end state ends
	// stream 2.
	modelProcess(t, e, id, pnChange(2))
	replies, err := s2.Replies()
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 2 {
		t.Fatalf("stream 2 replies %v", replies)
	}
	expectMsg(t, replies[1], pnState(5))
	if s2.Open() {
		t.Fatal("stream 2 still open after its end state")
	}

	// Cancelling stream 1 applies its cancel update.
	cr, err := s1.Cancel()
	if err != nil {
		t.Fatal(err)
	}
	expectMsg(t, cr.Delta, pnDelta(-1))
	if s1.Open() {
		t.Fatal("stream 1 open after cancel")
	}
	if err := e.Delta(pnDelta(1)); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := s1.Messages(); len(msgs) != 1 { // the message from before the cancel
		t.Fatalf("stream 1 got %d messages, want 1", len(msgs))
	}
	// Cancelling again gets an empty answer.
	cr, err = s1.Cancel()
	if err != nil || cr.Delta != nil || cr.Deleted {
		t.Fatalf("second cancel: %+v, %v", cr, err)
	}
	expectMsg(t, modelProcess(t, e, id).Reply, pnState(5))

	if _, err := testkit.CallCRDT[*pb.Response](e, "ProcessStreamed", &pb.StreamedRequest{Id: id}); err == nil {
		t.Fatal("CallCRDT accepted a streamed method")
	}
}

func TestCRDTDeletes(t *testing.T) {
	e := newModel(t, "GSet-1")
	s, err := testkit.StreamCRDT[*pb.Response](e, "ProcessStreamed", &pb.StreamedRequest{Id: "GSet-1"})
	if err != nil {
		t.Fatal(err)
	}
	res := modelProcess(t, e, "GSet-1", &pb.RequestAction{Action: &pb.RequestAction_Delete{Delete: &pb.Delete{}}})
	if !res.Deleted || res.Delta != nil || !e.Deleted() || s.Open() {
		t.Fatalf("result %+v, deleted %v, stream open %v", res, e.Deleted(), s.Open())
	}
	if _, err := testkit.CallCRDT[*pb.Response](e, "Process", &pb.Request{Id: "GSet-1"}); !errors.Is(err, testkit.ErrDeleted) {
		t.Fatalf("call after delete: %v", err)
	}

	e = newModel(t, "GSet-1")
	e.Delete()
	if e.State() != nil || !e.Deleted() {
		t.Fatal("Delete kept the CRDT")
	}
	if err := e.Delta(pnDelta(1)); !errors.Is(err, testkit.ErrDeleted) {
		t.Fatalf("delta after delete: %v", err)
	}
}

func TestCRDTInvalid(t *testing.T) {
	e := sdk.NewCRDTEntity(crdtmodel.ServiceName)
	sdk.OnCRDTCommand(e, "ProcessStreamed", func(ctx *sdk.CRDTContext, in *pb.StreamedRequest) (*pb.Response, error) { return nil, nil })
	sdk.OnCRDTStreamed(e, "Process", func(ctx *sdk.CRDTStreamContext[*pb.Response], in *pb.Request) (*pb.Response, error) { return nil, nil })
	_, err := testkit.NewCRDT(e, "x")
	if err == nil {
		t.Fatal("invalid entity accepted")
	}
	for _, want := range []string{
		"command ProcessStreamed: the method is server-streaming; use OnCRDTStreamed",
		"command Process: OnCRDTStreamed is for server-streaming methods",
		"command Process: no handler",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
