package layers

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these, so
// callers can test with errors.Is; the message of the wrapping error names the
// layer and the entry.
var (
	// ErrCorrupt reports a truncated or corrupt compressed stream or tar
	// archive, or a corrupt serialised index.
	ErrCorrupt = errors.New("corrupt or truncated data")
	// ErrPathEscapes reports an entry path (or hard link target) that leaves
	// the root through "..".
	ErrPathEscapes = errors.New("path escapes the root")
	// ErrInvalidPath reports an entry path that cannot name a file: empty, a
	// NUL byte, or a whiteout name used as a directory component.
	ErrInvalidPath = errors.New("invalid path")
	// ErrBadLink reports a hard link whose target does not exist, is a
	// directory, or lies outside the root.
	ErrBadLink = errors.New("invalid hard link")
	// ErrBadSize reports a size that is negative or larger than MaxEntrySize.
	ErrBadSize = errors.New("size out of range")
	// ErrBadWhiteout reports a whiteout of "." or of the root, a whiteout
	// with content, or a whiteout that is a directory.
	ErrBadWhiteout = errors.New("invalid whiteout")
	// ErrBadHeader reports header fields out of range (negative ids, device
	// numbers).
	ErrBadHeader = errors.New("invalid header field")
	// ErrUnsupported reports a tar entry type this package does not handle
	// (sparse files, continuation entries, unknown type flags).
	ErrUnsupported = errors.New("unsupported entry")
)

// EntryError is the error for one bad entry of one layer:
//
//	layer sha256:ab12…: entry "../etc/passwd": path escapes the root
//
// The caller adds the image name when it has one.
type EntryError struct {
	Layer string // layer digest as given by the caller; may be empty
	Entry string // entry name as found in the archive (not cleaned)
	Err   error  // wraps one of the sentinel errors
}

func (e *EntryError) Error() string {
	layer := e.Layer
	if layer == "" {
		layer = "(unnamed)"
	}
	return fmt.Sprintf("layer %s: entry %q: %v", layer, e.Entry, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// layerError wraps an error that concerns a layer but no particular entry.
func layerError(layer string, err error) error {
	if layer == "" {
		layer = "(unnamed)"
	}
	return fmt.Errorf("layer %s: %w", layer, err)
}
