package injector

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// fileStamp identifies a version of a file without reading it.
type fileStamp struct {
	size  int64
	mtime int64
	dev   uint64
	ino   uint64
	ctime int64
}

// pairStamp identifies a version of the certificate and key files.
type pairStamp struct {
	cert, key fileStamp
}

// certState is an immutable snapshot of what certReloader serves.
type certState struct {
	cert   *tls.Certificate
	loaded pairStamp
	// failed is the version of the files that last failed to load; it is
	// not retried until the files change again.
	failed pairStamp
}

// certReloader serves a certificate and key from files and reloads them when
// they change. Each handshake compares the files' stat data with the loaded
// version, and only a change makes it read and parse them. A pair that fails
// to load leaves the previous certificate in use.
//
// A file rewritten in place within one tick of the file system's clock, with
// the same size, is indistinguishable from the old one; writers that rename
// new files into place (kubelet's secret volumes, cert-manager's
// csi-driver) always change the inode.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	metrics           *metrics

	state atomic.Pointer[certState]

	mu          sync.Mutex // serialises reloads and guards lastStatErr
	lastStatErr string
}

// newCertReloader loads the initial pair; failing that is an error.
func newCertReloader(certFile, keyFile string, log *slog.Logger, m *metrics) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, metrics: m}
	stamp, err := r.stamp()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.state.Store(&certState{cert: cert, loaded: stamp})
	r.noteLoaded(cert)
	return r, nil
}

// GetCertificate is the tls.Config hook.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := r.state.Load()
	stamp, err := r.stamp()
	if err != nil {
		r.noteStatError(err)
		return st.cert, nil
	}
	if stamp == st.loaded || stamp == st.failed {
		return st.cert, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastStatErr = ""
	st = r.state.Load()
	if stamp == st.loaded || stamp == st.failed {
		return st.cert, nil
	}
	// The stamp is taken before reading: if the files change meanwhile, the
	// next handshake sees a newer stamp and loads again.
	cert, err := r.load()
	if err != nil {
		r.metrics.certReloadKO.Inc()
		r.log.Error("new serving certificate not loaded; keeping the previous one",
			"cert_file", r.certFile, "key_file", r.keyFile, "error", err)
		r.state.Store(&certState{cert: st.cert, loaded: st.loaded, failed: stamp})
		return st.cert, nil
	}
	r.metrics.certReloadOK.Inc()
	r.state.Store(&certState{cert: cert, loaded: stamp})
	r.noteLoaded(cert)
	return cert, nil
}

// Certificate returns the certificate in use.
func (r *certReloader) Certificate() *tls.Certificate { return r.state.Load().cert }

func (r *certReloader) noteLoaded(cert *tls.Certificate) {
	leaf := cert.Leaf
	r.metrics.certNotAfter.Set(float64(leaf.NotAfter.Unix()))
	r.log.Info("serving certificate loaded", "cert_file", r.certFile,
		"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter)
}

// noteStatError logs a failure to stat the files once per distinct error;
// during a rotation the files may be missing for a moment.
func (r *certReloader) noteStatError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if msg := err.Error(); msg != r.lastStatErr {
		r.lastStatErr = msg
		r.log.Warn("serving certificate files not readable; keeping the loaded certificate", "error", err)
	}
}

func (r *certReloader) stamp() (pairStamp, error) {
	c, err := statFile(r.certFile)
	if err != nil {
		return pairStamp{}, err
	}
	k, err := statFile(r.keyFile)
	if err != nil {
		return pairStamp{}, err
	}
	return pairStamp{cert: c, key: k}, nil
}

func statFile(name string) (fileStamp, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}, fmt.Errorf("stat serving certificate file: %w", err)
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	sysStamp(fi, &s)
	return s, nil
}

// load reads and checks the pair.
func (r *certReloader) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %s: %w", r.certFile, err)
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}
