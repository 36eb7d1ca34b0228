// Command testserver is a tiny program for the node agent's tests. With
// -listen it serves its HOSTNAME (the Pod's name) over HTTP; with -get it
// fetches each URL, prints "URL BODY" per line and exits 1 if any failed;
// with -whoami it asks the API server, with client-go's in-cluster
// configuration, who it is and prints "user=NAME" and the namespace file
// of its service-account volume as "namespace=NS".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

type urls []string

func (u *urls) String() string     { return strings.Join(*u, ",") }
func (u *urls) Set(s string) error { *u = append(*u, s); return nil }

func main() {
	listen := flag.String("listen", "", "address to serve HOSTNAME at, e.g. :8080")
	var gets urls
	flag.Var(&gets, "get", "URL to fetch (repeatable)")
	whoami := flag.Bool("whoami", false, "ask the API server in-cluster who this Pod is")
	flag.Parse()

	if *whoami {
		if err := whoAmI(); err != nil {
			log.Fatal(err)
		}
		return
	}

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

// saNamespaceFile is where the service-account volume holds the Pod's
// namespace.
const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func whoAmI() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("in-cluster configuration: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("SelfSubjectReview at %s: %w", cfg.Host, err)
	}
	ns, err := os.ReadFile(saNamespaceFile)
	if err != nil {
		return err
	}
	fmt.Printf("user=%s\nnamespace=%s\n", r.Status.UserInfo.Username, ns)
	return nil
}
