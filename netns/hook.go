package netns

import "context"

// Hook connects a container through slirp4netns; it is the sandbox's
// NetworkHook (sandbox declares the interface; netns does not import it).
type Hook struct {
	Options Options
}

// NewHook returns a Hook that starts slirp4netns with opts.
func NewHook(opts Options) *Hook { return &Hook{Options: opts} }

// Setup starts slirp4netns for childPID's namespaces, with the port
// forwards in place, and returns its teardown (Slirp.Close).
func (h *Hook) Setup(ctx context.Context, childPID int) (teardown func() error, err error) {
	s, err := Start(ctx, childPID, h.Options)
	if err != nil {
		return nil, err
	}
	return s.Close, nil
}
