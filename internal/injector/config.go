package injector

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

// Labels that steer the injection.
const (
	LabelMarbleType        = "marblerun/marbletype"
	LabelMarbleContainer   = "marblerun/marblecontainer"
	LabelResourceInjection = "marblerun/resource-injection"
	// ResourceInjectionDisabled is the value of LabelResourceInjection that
	// turns off SGX resources and the toleration.
	ResourceInjectionDisabled = "disabled"
)

// UUID file layout: the downward-API volume exposes the Pod's UID as file
// UUIDFileName in directory /<marbletype>-uid.
const (
	UUIDVolumeName = "marblerun-uuid-file"
	UUIDFileName   = "uuid-file"
	uuidFieldPath  = "metadata.uid"
)

// Defaults of the command-line flags, as MarbleRun's injector has them.
const (
	DefaultCoordAddr     = "coordinator-mesh-api.marblerun:2001"
	DefaultClusterDomain = "cluster.local"
	DefaultSGXResource   = sgxresource.IntelEPC
	defaultNamespace     = "default"
)

// Config holds what the rules need besides the Pod.
type Config struct {
	// CoordAddr is the Coordinator's mesh API address, host:port.
	CoordAddr string
	// ClusterDomain is the cluster's DNS domain, e.g. cluster.local.
	ClusterDomain string
	// SGXResource selects the device plugin's resources; see Limits.
	SGXResource string
}

// Resource is one extended-resource limit and its quantity.
type Resource struct {
	Name     string
	Quantity string
}

// Limits returns the limits injected for the configured SGX resource: the
// Intel plugin's three resources, Azure's and Alibaba's EPC size, or 10 of a
// custom resource.
func (c Config) Limits() []Resource {
	switch c.SGXResource {
	case sgxresource.IntelEPC:
		return []Resource{
			{sgxresource.IntelEPC, "10Mi"},
			{sgxresource.IntelEnclave, "1"},
			{sgxresource.IntelProvision, "1"},
		}
	default:
		// Azure's and Alibaba's plugins count EPC in MiB; a custom
		// resource gets the same amount.
		return []Resource{{c.SGXResource, "10"}}
	}
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if host, port, err := net.SplitHostPort(c.CoordAddr); err != nil {
		errs = append(errs, fmt.Errorf("coordinator address %q: %w", c.CoordAddr, err))
	} else if host == "" || port == "" {
		errs = append(errs, fmt.Errorf("coordinator address %q: want host:port", c.CoordAddr))
	}
	if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("cluster domain %q: %s", c.ClusterDomain, strings.Join(msgs, "; ")))
	}
	if fe := validation.IsDomainPrefixedKey(nil, c.SGXResource); len(fe) > 0 {
		errs = append(errs, fmt.Errorf("SGX resource %q: %w", c.SGXResource, fe.ToAggregate()))
	}
	return errors.Join(errs...)
}
