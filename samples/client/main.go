// Command client is a sample marble that calls the sample server over
// mTLS and checks that both hold the same shared key.
//
// It runs under premain, which activates it and writes the shared key to
// the file named by -key-file. It takes its TLS credentials from the
// MARBLE_PREDEFINED_* variables, asks the server for
// HMAC-SHA256(shared key, message), compares the answer with its own, and
// exits 0 when they match.
//
// Usage: client [-server host:port] -key-file FILE [-message TEXT]
// The server address defaults to $SAMPLE_SERVER_ADDR, then localhost:8443.
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
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/marblemesh/marblemesh/marble"
)

// macResponse is the server's answer of GET /mac.
type macResponse struct {
	MAC    string `json:"mac"`
	Client string `json:"client"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, marble.NewLogger(os.Getenv, os.Stdout))
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sample-client: %v\n", err)
		os.Exit(1)
	}
}

// run calls the server and reports to log, whose format EDG_LOG_FORMAT
// selects in main.
func run(ctx context.Context, args []string, getenv func(string) string, log *slog.Logger) error {
	defaultServer := getenv("SAMPLE_SERVER_ADDR")
	if defaultServer == "" {
		defaultServer = "localhost:8443"
	}
	flags := flag.NewFlagSet("sample-client", flag.ContinueOnError)
	server := flags.String("server", defaultServer, "sample server address")
	keyFile := flags.String("key-file", "", "file holding the shared key (raw bytes)")
	message := flags.String("message", "hello", "message to authenticate")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("-key-file is required")
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("reading the shared key: %w", err)
	}
	if len(key) < 16 {
		return fmt.Errorf("shared key in %s has %d bytes; want at least 16", *keyFile, len(key))
	}
	creds, err := marble.LoadCredentials(getenv)
	if err != nil {
		return fmt.Errorf("loading mesh credentials: %w", err)
	}

	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: creds.ClientTLSConfig()},
		Timeout:   15 * time.Second,
	}
	defer client.CloseIdleConnections()
	reqURL := "https://" + *server + "/mac?message=" + url.QueryEscape(*message)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reqURL, nil)
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("calling the server: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server answered %s: %s", resp.Status, body)
	}
	var answer macResponse
	if err := json.Unmarshal(body, &answer); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	got, err := hex.DecodeString(answer.MAC)
	if err != nil {
		return fmt.Errorf("server sent a MAC that is not hex: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(*message))
	if !hmac.Equal(got, m.Sum(nil)) {
		return errors.New("the server's HMAC differs from ours: the two marbles do not share the same key")
	}

	peer := resp.TLS.PeerCertificates[0]
	log.Info("sample-client: mTLS to the server", "server", *server, "subject", peer.Subject.String(), "issuer", peer.Issuer.String())
	log.Info("sample-client: the server saw our certificate", "subject", answer.Client)
	log.Info("sample-client: HMAC-SHA256 matches: both marbles hold the same shared key", "message", *message)
	return nil
}
