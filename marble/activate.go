package marble

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/rpc"
)

// constError is an error that can be a constant.
type constError string

func (e constError) Error() string { return string(e) }

// ErrNoIssuer is returned by Activate when Config.Issuer is nil.
const ErrNoIssuer = constError("no attestation issuer: Config.Issuer is nil; set it, or build the Config with ConfigFromEnv, " +
	"which selects Gramine's issuer under gramine-sgx, or the simulation with OE_SIMULATION=1 (insecure: the Coordinator " +
	"must be in simulation too, and nothing proves what code this marble runs)")

// attemptTimeout bounds a single activation call, so that a connection that
// hangs is retried like one that fails.
const attemptTimeout = 20 * time.Second

// RejectedError means the Coordinator answered the activation with an
// error that retrying does not fix, such as an unknown marble type or
// evidence that does not match the manifest.
type RejectedError struct {
	// Addr is the Coordinator's address.
	Addr string
	// Code is the gRPC status code of the answer.
	Code codes.Code
	// Reason is the Coordinator's message.
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("coordinator at %s rejected the activation (%s): %s", e.Addr, e.Code, e.Reason)
}

// UnavailableError means the Coordinator could not be reached, or was not
// ready to accept marbles, for the whole retry period.
type UnavailableError struct {
	// Addr is the Coordinator's address.
	Addr string
	// Waited is the time spent trying.
	Waited time.Duration
	// Attempts is the number of activation calls made.
	Attempts int
	// Last is the error of the last attempt.
	Last error
}

func (e *UnavailableError) Error() string {
	what := "could not be reached"
	if status.Code(e.Last) == codes.FailedPrecondition {
		what = "was not ready to accept marbles (has a manifest been set?)"
	}
	return fmt.Sprintf("coordinator at %s %s within %s (%d attempts): %v",
		e.Addr, what, e.Waited.Round(time.Millisecond), e.Attempts, e.Last)
}

func (e *UnavailableError) Unwrap() error { return e.Last }

// Activate attests the marble to the Coordinator and returns the
// parameters the Coordinator rendered for it.
//
// It loads or creates the marble's UUID, creates a key, a self-signed
// certificate and a CSR, obtains evidence from cfg.Issuer over
// attestation.BindHash(certificate DER) and calls rpc.Marble/Activate over
// TLS presenting that certificate. While the Coordinator is unreachable or
// not ready (codes Unavailable, FailedPrecondition) it retries with
// exponential backoff for up to cfg.RetryTimeout, then returns an
// *UnavailableError. Any other answer is final and returned as a
// *RejectedError carrying the Coordinator's reason.
func Activate(ctx context.Context, cfg Config) (*rpc.Parameters, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("invalid marble configuration: %w", err)
	}
	if cfg.Issuer == nil {
		return nil, ErrNoIssuer
	}
	log := cfg.logger().With("marble_type", cfg.MarbleType, "coordinator", cfg.CoordinatorAddr)

	id, created, err := LoadOrCreateUUID(cfg.UUIDFile)
	if err != nil {
		return nil, fmt.Errorf("loading the marble UUID: %w", err)
	}
	if created {
		log.Info("created marble UUID", "uuid", id.String(), "file", cfg.UUIDFile)
	} else {
		log.Info("loaded marble UUID", "uuid", id.String(), "file", cfg.UUIDFile)
	}

	names, ips := cfg.hostNames()
	ident, err := newIdentity(cfg.curve(), id.String(), names, ips)
	if err != nil {
		return nil, err
	}
	quote, err := cfg.Issuer.Issue(ctx, attestation.BindHash(ident.certDER))
	if err != nil {
		return nil, fmt.Errorf("producing attestation evidence: %w", err)
	}
	if cfg.Issuer.Insecure() {
		log.Warn("simulation mode: sending no attestation evidence; the Coordinator admits this marble only if it runs in simulation too")
	}

	req := &rpc.ActivationReq{
		Quote:      quote,
		CSR:        ident.csrDER,
		MarbleType: cfg.MarbleType,
		UUID:       id.String(),
	}
	resp, err := activateWithRetry(ctx, cfg, log, ident.tlsCertificate(), req)
	if err != nil {
		return nil, err
	}
	params := resp.GetParameters()
	if params == nil {
		params = &rpc.Parameters{}
	}
	log.Info("activated", "uuid", id.String(), "files", len(params.GetFiles()),
		"env", len(params.GetEnv()), "argv", len(params.GetArgv()))
	return params, nil
}

// activateWithRetry calls Activate until it succeeds, fails for good, or
// the retry period ends.
func activateWithRetry(ctx context.Context, cfg Config, log *slog.Logger, cert tls.Certificate, req *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	start := time.Now()
	timeout := cfg.retryTimeout()
	deadline := start.Add(timeout)
	// The last attempt starts early enough to have this much time left.
	latestStart := deadline.Add(-min(time.Second, timeout/5))
	backoff := cfg.retryBackoff()
	var last error
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithDeadline(ctx, minTime(deadline, time.Now().Add(attemptTimeout)))
		resp, err := activateOnce(attemptCtx, cfg.CoordinatorAddr, cert, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		var setup *setupError
		if errors.As(err, &setup) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, stopped(cfg.CoordinatorAddr, ctx.Err(), last)
		}
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.Unavailable, codes.FailedPrecondition, codes.DeadlineExceeded:
		default:
			return nil, &RejectedError{Addr: cfg.CoordinatorAddr, Code: st.Code(), Reason: st.Message()}
		}
		// An attempt cut short by the end of the retry period says less
		// than the answer of the attempt before it.
		if last == nil || st.Code() != codes.DeadlineExceeded || time.Now().Before(deadline) {
			last = err
		}
		next := minTime(time.Now().Add(backoff), latestStart)
		wait := time.Until(next)
		if wait <= 0 {
			return nil, &UnavailableError{Addr: cfg.CoordinatorAddr, Waited: time.Since(start), Attempts: attempt, Last: last}
		}
		log.Info("activation attempt failed, retrying", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "reason", st.Message())
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, stopped(cfg.CoordinatorAddr, ctx.Err(), last)
		case <-timer.C:
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// activateOnce makes one activation call on a fresh connection, so that
// each attempt dials anew instead of waiting for gRPC's own reconnect
// backoff.
func activateOnce(ctx context.Context, addr string, cert tls.Certificate, req *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	// The Coordinator's certificate is not verified on this channel, as in
	// MarbleRun: a marble has no trust anchor before activation. Trust in
	// the Coordinator comes from its administrators, who verify its quote
	// before they set the manifest. The consequence: whoever can intercept
	// this connection can hand the marble forged parameters. Outside
	// simulation it cannot obtain the marble's secrets, because the
	// Coordinator authenticates the marble through the evidence, which
	// binds the certificate presented here and so only this connection.
	tlsCfg := &tls.Config{
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	}
	// passthrough hands addr to the dialer as host:port, whatever it looks
	// like, instead of reading a scheme such as "unix:" out of it.
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, &setupError{fmt.Errorf("setting up a connection to %s: %w", addr, err)}
	}
	defer conn.Close()
	resp, err := rpc.NewMarbleClient(conn).Activate(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// stopped is the error of an activation whose context ended, with the
// failure of the last attempt if there was one.
func stopped(addr string, ctxErr, last error) error {
	if last == nil {
		return fmt.Errorf("activation at %s stopped: %w", addr, ctxErr)
	}
	return fmt.Errorf("activation at %s stopped: %w (last attempt: %v)", addr, ctxErr, last) //nolint:errorlint // the context ended the loop; the last attempt is only reported
}

// setupError is a local failure to set up a connection; retrying does not
// fix it.
type setupError struct{ err error }

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
