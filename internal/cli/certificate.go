package cli

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newCertificateCmd(out *output, connect connectFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "Verify the Coordinator and save its root, intermediate or chain certificate",
		Long: `Verify the Coordinator and write one of its CA certificates as PEM, for
clients of the mesh to trust. The first verification pins the Coordinator's
certificates; later ones refuse a Coordinator whose root changed.

The root never changes; the intermediate changes with every manifest update,
so clients that trust it stop trusting marbles of an older manifest.`,
	}
	for _, c := range []struct {
		name, short, file string
		pick              func(*api.Attestation) ([]*x509.Certificate, error)
	}{
		{"root", "Save the Coordinator's root certificate", "marblerunRootCA.crt",
			func(a *api.Attestation) ([]*x509.Certificate, error) { return []*x509.Certificate{a.Root}, nil }},
		{"intermediate", "Save the Coordinator's intermediate certificate", "marblerunIntermediateCA.crt",
			func(a *api.Attestation) ([]*x509.Certificate, error) {
				if a.Intermediate == nil {
					return nil, errors.New("the Coordinator sent no intermediate certificate")
				}
				return []*x509.Certificate{a.Intermediate}, nil
			}},
		{"chain", "Save the Coordinator's intermediate certificate followed by its root", "marblerunChainCA.crt",
			func(a *api.Attestation) ([]*x509.Certificate, error) {
				if a.Intermediate == nil {
					return nil, errors.New("the Coordinator sent no intermediate certificate")
				}
				return []*x509.Certificate{a.Intermediate, a.Root}, nil
			}},
	} {
		cmd.AddCommand(newCertificateSubCmd(out, connect, c.name, c.short, c.file, c.pick))
	}
	return cmd
}

func newCertificateSubCmd(out *output, connect connectFunc, name, short, defaultFile string, pick func(*api.Attestation) ([]*x509.Certificate, error)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   name + " <IP:PORT>",
		Short: short,
		Args:  exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			att, err := connect(addr).attest(cmd.Context(), addr, pinCheck)
			if err != nil {
				return err
			}
			certs, err := pick(att)
			if err != nil {
				return err
			}
			var data []byte
			for _, c := range certs {
				data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
			}
			if err := out.writeOutput(output, data, 0o644); err != nil {
				return err
			}
			if format(cmd).json() {
				fps := make([]string, len(certs))
				for i, c := range certs {
					fps[i] = api.Fingerprint(c)
				}
				return printJSON(out.reportWriter(output), struct {
					File         string   `json:"file"`
					Fingerprints []string `json:"fingerprints"`
				}{output, fps})
			}
			fmt.Fprintf(out.reportWriter(output), "Certificate (%s) written to %s.\n", name, outputName(output))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", defaultFile, "file to write the certificate to")
	addFormatFlag(cmd)
	return cmd
}
