package injector

import (
	"context"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/testpki"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

func TestRunCommandHelp(t *testing.T) {
	var out testsupport.SyncBuffer
	if code := RunCommand(context.Background(), []string{"--help"}, &out); code != ExitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, flag := range []string{"-coordAddr", "-tlsCertFile", "-tlsKeyFile", "-clusterDomain", "-sgxResource", "-addr", "-metricsAddr",
		`"coordinator-mesh-api.marblerun:2001"`, `"/etc/webhook/certs/tls.crt"`, `"/etc/webhook/certs/tls.key"`, `"cluster.local"`, `"sgx.intel.com/epc"`, `":8443"`,
		"marblerun/marbletype", "admitted unchanged"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("help lacks %s:\n%s", flag, out.String())
		}
	}
}

func TestRunCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"unknown flag":   {[]string{"-nope"}, ExitUsage, "flag provided but not defined"},
		"argument":       {[]string{"serve"}, ExitUsage, "unexpected arguments"},
		"bad resource":   {[]string{"-sgxResource=epc", "-tlsCertFile=" + filepath.Join(dir, "c")}, ExitError, `SGX resource \"epc\"`},
		"bad coord addr": {[]string{"-coordAddr=coordinator"}, ExitError, "coordinator address"},
		"missing cert":   {[]string{"-tlsCertFile=" + filepath.Join(dir, "c"), "-tlsKeyFile=" + filepath.Join(dir, "k")}, ExitError, "loading serving certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			var out testsupport.SyncBuffer
			if code := RunCommand(context.Background(), tc.args, &out); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.String())
			}
		})
	}
}

// TestRunCommandServes runs the program on a free loopback port, asks it for
// /healthz and stops it.
func TestRunCommandServes(t *testing.T) {
	ca, certFile, keyFile := testpki.ServingFiles(t)
	addr := testsupport.FreeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testsupport.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- RunCommand(ctx, []string{"-addr=" + addr, "-tlsCertFile=" + certFile, "-tlsKeyFile=" + keyFile,
			"-shutdownDelay=0", "-sgxResource=" + sgxresource.AzureEPC}, &out)
	}()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	defer c.CloseIdleConnections()
	waitFor(t, "the server", func() bool {
		select {
		case code := <-done:
			t.Fatalf("exited early with %d:\n%s", code, out.String())
		default:
		}
		resp, err := c.Get("https://" + addr + PathHealthz)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d:\n%s", code, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
	for _, want := range []string{`"msg":"marble injector serving"`, `"sgx_resource":"kubernetes.azure.com/sgx_epc_mem_in_MiB"`, `"msg":"stopped"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, out.String())
		}
	}
}
