// Package logging holds the slog conventions shared by the project's
// binaries: JSON (or text) lines whose durations read like "1.5s", and the
// level at which a server logs a client's failed TLS handshake.
package logging

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"syscall"
)

// Formats of New.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// ReplaceAttr renders time.Duration values as their String form ("1.5s",
// "250ms") instead of the JSON handler's integer nanoseconds. Use it as
// slog.HandlerOptions.ReplaceAttr.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// NewJSON returns a logger that writes JSON lines to w from level on.
func NewJSON(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}))
}

// New returns a logger that writes JSON lines (format "json") or slog's
// text lines (any other format, "text" by convention) to w at Info and above.
func New(w io.Writer, format string) *slog.Logger {
	if strings.EqualFold(strings.TrimSpace(format), FormatJSON) {
		return NewJSON(w, slog.LevelInfo)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
}

// Client faults of a TLS handshake, as HandshakeFailure classifies them.
const (
	// HungUp: the client closed or reset the connection, or went silent.
	// Load balancers' TCP probes and port scanners do this all day.
	HungUp = "client hung up"
	// BadClient: the client spoke something other than acceptable TLS, or
	// refused the server's certificate, or presented one that does not
	// verify.
	BadClient = "client refused or failed TLS"
)

// HandshakeFailure tells whether err, a failed server-side TLS handshake
// (or its text, as net/http logs it), is the client's doing, and which
// kind: HungUp, BadClient, or "" for anything else (the server's own
// trouble, such as a missing certificate).
func HandshakeFailure(err error) string {
	if err == nil {
		return ""
	}
	var (
		recordErr tls.RecordHeaderError
		verifyErr *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed),
		errors.As(err, &netErr) && netErr.Timeout():
		return HungUp
	case errors.As(err, &recordErr), errors.As(err, &verifyErr), errors.As(err, &unknownCA):
		return BadClient
	}
	return handshakeFailureText(err.Error())
}

// handshakeFailureText classifies the text of a handshake error; net/http
// hands over only that.
func handshakeFailureText(msg string) string {
	for _, s := range []string{"EOF", "connection reset by peer", "broken pipe", "i/o timeout", "use of closed network connection"} {
		if strings.HasSuffix(msg, s) {
			return HungUp
		}
	}
	for _, s := range []string{
		"remote error: tls:",                // the client sent an alert, such as bad certificate
		"first record does not look like a", // plain HTTP or another protocol on the TLS port
		"client sent an HTTP request to an HTTPS server",
		"tls: client offered only unsupported versions",
		"tls: no cipher suite supported by both client and server",
		"tls: no ECDHE curve supported by both client and server",
		"tls: client requested unsupported application protocols",
		"tls: failed to verify certificate",
		"tls: client didn't provide a certificate",
		"tls: unsupported SSLv2 handshake received",
		"tls: received unexpected handshake message",
		"tls: oversized record received",
		"tls: client used the legacy version field",
		"tls: bad record MAC",
		"x509: ",
	} {
		if strings.Contains(msg, s) {
			return BadClient
		}
	}
	return ""
}

// HandshakeLevel is the level at which a server logs a failed TLS handshake
// with the failure kind: Debug when the client hung up, Info when it spoke
// bad TLS or had a bad certificate, and other at anything else. A client
// cannot raise the server's log above Info.
func HandshakeLevel(kind string, other slog.Level) slog.Level {
	var l slog.Level
	switch kind {
	case HungUp:
		l = slog.LevelDebug
	case BadClient:
		l = slog.LevelInfo
	default:
		return other
	}
	return min(l, other)
}

// tlsErrorPrefix starts net/http's log line of a failed handshake:
// "http: TLS handshake error from ADDR: ERROR".
const tlsErrorPrefix = "http: TLS handshake error from "

// ServerErrorLog returns a logger for http.Server.ErrorLog that writes to
// logger: failed TLS handshakes at HandshakeLevel (with the client's
// address and the failure kind), everything else at level.
func ServerErrorLog(logger *slog.Logger, level slog.Level) *log.Logger {
	return log.New(&serverErrorWriter{log: logger, level: level}, "", 0)
}

type serverErrorWriter struct {
	log   *slog.Logger
	level slog.Level
}

func (w *serverErrorWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	rest, ok := strings.CutPrefix(msg, tlsErrorPrefix)
	if !ok {
		w.log.Log(context.Background(), w.level, msg)
		return len(p), nil
	}
	addr, reason, _ := strings.Cut(rest, ": ")
	kind := handshakeFailureText(reason)
	attrs := []any{"remote", addr, "error", reason}
	if kind != "" {
		attrs = append(attrs, "cause", kind)
	}
	w.log.Log(context.Background(), HandshakeLevel(kind, w.level), "TLS handshake failed", attrs...)
	return len(p), nil
}
