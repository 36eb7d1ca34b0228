// Command server is a sample marble: an HTTPS server that admits only
// clients with a certificate from the same mesh.
//
// It activates itself with marble.PreMain (do not start it under premain),
// takes its TLS credentials from the MARBLE_PREDEFINED_* variables and a
// shared key, hex-encoded, from SAMPLE_SHARED_KEY. GET /mac?message=TEXT
// answers with HMAC-SHA256(shared key, TEXT), which a client holding the
// same key can check.
//
// Usage: server [-listen host:port]
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/marblemesh/marblemesh/marble"
)

// envSharedKey holds the hex-encoded shared key, set from the manifest.
const envSharedKey = "SAMPLE_SHARED_KEY"

// macResponse is the answer of GET /mac.
type macResponse struct {
	// MAC is hex(HMAC-SHA256(shared key, message)).
	MAC string `json:"mac"`
	// Client is the subject of the client's certificate.
	Client string `json:"client"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "sample-server: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := marble.PreMain(ctx); err != nil {
		return err
	}

	flags := flag.NewFlagSet("sample-server", flag.ContinueOnError)
	listen := flags.String("listen", "localhost:8443", "address to serve HTTPS on")
	if err := flags.Parse(os.Args[1:]); err != nil {
		return err
	}
	key, err := sharedKey(os.Getenv(envSharedKey))
	if err != nil {
		return err
	}
	creds, err := marble.LoadCredentials(os.Getenv)
	if err != nil {
		return fmt.Errorf("loading mesh credentials: %w", err)
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	log := marble.NewLogger(os.Getenv, os.Stdout)
	log.Info("sample-server: serving HTTPS, requiring client certificates issued by the mesh root",
		"addr", lis.Addr().String(), "subject", creds.Certificate.Leaf.Subject.String(), "root", creds.Root.Subject.String())
	return serve(ctx, lis, newHandler(key, log), creds, log)
}

// sharedKey decodes the hex key delivered through the environment.
func sharedKey(hexKey string) ([]byte, error) {
	if hexKey == "" {
		return nil, fmt.Errorf("%s is not set: the manifest must deliver the shared key", envSharedKey)
	}
	key, err := hex.DecodeString(hexKey)
	if err != nil {
		return nil, fmt.Errorf("%s is not hex: %w", envSharedKey, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("%s holds %d bytes; want at least 16", envSharedKey, len(key))
	}
	return key, nil
}

// serve runs an HTTPS server with the mesh's mTLS configuration until ctx
// ends.
func serve(ctx context.Context, lis net.Listener, h http.Handler, creds *marble.Credentials, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         creds.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		// The HTTP server's own lines, such as a client refused for its
		// certificate, in the same format.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelInfo),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// newHandler answers GET /mac and reports each client to log.
func newHandler(key []byte, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /mac", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "client certificate required", http.StatusUnauthorized)
			return
		}
		peer := r.TLS.PeerCertificates[0]
		message := r.URL.Query().Get("message")
		m := hmac.New(sha256.New, key)
		m.Write([]byte(message))
		log.Info("sample-server: mTLS request from client certificate", "subject", peer.Subject.String(), "issuer", peer.Issuer.String())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(macResponse{MAC: hex.EncodeToString(m.Sum(nil)), Client: peer.Subject.String()})
	})
	return mux
}
