package sdk

import (
	"fmt"

	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
)

// init gives sdk/testkit access to the entity runtime (see package bridge).
func init() {
	bridge.CompileEventSourced = func(entity any) (bridge.EventSourcedDefinition, error) {
		e, ok := entity.(EventSourcedDefinition)
		if !ok || e == nil {
			return nil, fmt.Errorf("%T is not an event-sourced entity", entity)
		}
		def, err := e.compileEventSourced()
		if err != nil {
			return nil, err
		}
		return def, nil
	}
	bridge.CompileValueEntity = func(entity any) (bridge.ValueEntityDefinition, error) {
		e, ok := entity.(ValueEntityDefinition)
		if !ok || e == nil {
			return nil, fmt.Errorf("%T is not a value entity", entity)
		}
		def, err := e.compileValueEntity()
		if err != nil {
			return nil, err
		}
		return def, nil
	}
	bridge.CompileCRDT = func(entity any) (bridge.CRDTDefinition, error) {
		e, ok := entity.(*CRDTEntity)
		if !ok || e == nil {
			return nil, fmt.Errorf("%T is not a CRDT entity", entity)
		}
		def, err := e.compileCRDT()
		if err != nil {
			return nil, err
		}
		return def, nil
	}
	bridge.CompileAction = func(action any) (bridge.ActionDefinition, error) {
		a, ok := action.(*Action)
		if !ok {
			return nil, fmt.Errorf("%T is not an action", action)
		}
		def, err := a.compileAction()
		if err != nil {
			return nil, err
		}
		return def, nil
	}
}
