package install

// Error is a failure that comes with advice on what to do next.
type Error struct {
	Err error
	// Next says what the user can do about it, as a sentence.
	Next string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func withNext(err error, next string) error { return &Error{Err: err, Next: next} }
