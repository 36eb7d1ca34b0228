// Command testserver is a tiny program for the node agent's tests. With
// -listen it serves its HOSTNAME (the Pod's name) over HTTP; with -get it
// fetches each URL, prints "URL BODY" per line and exits 1 if any failed.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

func main() {
	listen := flag.String("listen", "", "address to serve HOSTNAME at, e.g. :8080")
	var gets urls
	flag.Var(&gets, "get", "URL to fetch (repeatable)")
	flag.Parse()

	if *listen != "" {
		host := os.Getenv("HOSTNAME")
		log.Printf("serving %s at %s", host, *listen)
		log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, host)
		})))
	}
	client := &http.Client{Timeout: 3 * time.Second}
	failed := false
	for _, u := range gets {
		body, err := get(client, u)
		if err != nil {
			fmt.Printf("%s ERROR %v\n", u, err)
			failed = true
			continue
		}
		fmt.Printf("%s %s\n", u, body)
	}
	if failed {
		os.Exit(1)
	}
}

func get(client *http.Client, u string) (string, error) {
	resp, err := client.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}
