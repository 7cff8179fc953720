// Package register is the value entity the SDK's own tests run: a register
// whose Process command combines every feature of the value context.
package register

import (
	"time"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the register's gRPC service.
const ServiceName = "cloudstate.sdktest.Register"

// InitialValue is the value of a register that has no stored state.
const InitialValue = "initial"

// New returns the register entity definition.
func New() *sdk.ValueEntity[*testpb.RegisterState] {
	e := sdk.NewValueEntity(ServiceName,
		func(string) *testpb.RegisterState { return &testpb.RegisterState{Value: InitialValue} },
		sdk.WithPersistenceID("registers"), sdk.WithPassivationTimeout(time.Minute))

	sdk.OnValueCommand(e, "Process", func(ctx *sdk.ValueContext, s *testpb.RegisterState, in *testpb.ProcessRegister) (*testpb.RegisterState, error) {
		if v, ok := ctx.Metadata().Get("x-echo"); ok {
			var md sdk.Metadata
			md.Add("x-echo", v)
			ctx.SetReplyMetadata(md)
		}
		forwarded := false
		for _, op := range in.GetOps() {
			switch o := op.GetOp().(type) {
			case *testpb.RegisterOp_Update:
				s.Value = o.Update
				s.Writes++
				ctx.Update(s)
			case *testpb.RegisterOp_Delete:
				ctx.Delete()
			case *testpb.RegisterOp_Fail:
				return nil, ctx.Fail("%s", o.Fail)
			case *testpb.RegisterOp_Mutate:
				s.Value = o.Mutate
			case *testpb.RegisterOp_Forward:
				ctx.Forward(ServiceName, "Get", &testpb.GetRegister{RegisterId: o.Forward})
				forwarded = true
			case *testpb.RegisterOp_Effect:
				ctx.SideEffect(ServiceName, "Get", &testpb.GetRegister{RegisterId: o.Effect.GetRegisterId()}, o.Effect.GetSynchronous())
			case *testpb.RegisterOp_UpdateWrongType:
				ctx.Update(wrapperspb.String("not a register"))
			}
		}
		if forwarded {
			return nil, nil
		}
		return s, nil
	})
	sdk.OnValueCommand(e, "Get", func(ctx *sdk.ValueContext, s *testpb.RegisterState, in *testpb.GetRegister) (*testpb.RegisterState, error) {
		return s, nil
	})
	sdk.OnValueCommand(e, "Boom", func(ctx *sdk.ValueContext, s *testpb.RegisterState, in *testpb.GetRegister) (*emptypb.Empty, error) {
		s.Value = "boom"
		ctx.Update(s)
		panic("boom")
	})
	return e
}
