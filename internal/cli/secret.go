package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

func newSecretCmd(out *output, connect connectFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Read and write secrets as a user of the manifest",
		Long: `Read and write the Coordinator's secrets as a user of the manifest
(--cert and --key), after verifying the Coordinator. The first verification
pins its certificates; later ones refuse a Coordinator whose root changed.`,
	}
	auth := addUserAuthFlags(cmd, true)
	cmd.AddCommand(newSecretGetCmd(out, connect, auth), newSecretSetCmd(out, connect, auth))
	return cmd
}

func newSecretGetCmd(out *output, connect connectFunc, auth *userAuth) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get <SECRETNAME>... <IP:PORT>",
		Short: "Get secrets",
		Long: `Get secrets the user may ReadSecret. Private keys and secret values are
only written to the file named with --output (JSON, MarbleRun's format, mode
0600); the printed summary shows types, certificates and public keys only.`,
		Example: "  marblerun secret get apiKey webCert localhost:4433 -c admin.crt -k admin.key -o secrets.json",
		Args:    minArgs(2, "<SECRETNAME>... <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[len(args)-1]
			conn := connect(addr)
			names := args[:len(args)-1]
			cert, err := auth.load()
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinCheck)
			if err != nil {
				return err
			}
			secrets, err := api.SecretGet(cmd.Context(), addr, att.Root, cert, names...)
			if err != nil {
				return err
			}
			if output != "" {
				data, err := json.MarshalIndent(secrets, "", "  ")
				if err != nil {
					return fmt.Errorf("encoding secrets: %w", err)
				}
				if err := out.writeOutput(output, append(data, '\n'), 0o600); err != nil {
					return err
				}
			}
			if format(cmd).json() {
				return printJSON(out.reportWriter(output), publicSecrets(secrets))
			}
			printSecrets(out.reportWriter(output), secrets, output)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the secrets, including private parts, to (JSON)")
	addFormatFlag(cmd)
	return cmd
}

// publicSecret is what may be printed of a secret.
type publicSecret struct {
	Type        string `json:"type"`
	Size        uint   `json:"size,omitempty"`
	Shared      bool   `json:"shared"`
	UserDefined bool   `json:"userDefined"`
	ValidFor    uint   `json:"validFor,omitempty"`
	Cert        []byte `json:"cert,omitempty"`
	Public      []byte `json:"public,omitempty"`
}

func publicSecrets(secrets map[string]api.Secret) map[string]publicSecret {
	out := make(map[string]publicSecret, len(secrets))
	for name, s := range secrets {
		p := publicSecret{Type: s.Type, Size: s.Size, Shared: s.Shared, UserDefined: s.UserDefined, ValidFor: s.ValidFor, Cert: s.Cert}
		if hasPublicKey(s) {
			p.Public = s.Public
		}
		out[name] = p
	}
	return out
}

// hasPublicKey reports whether s.Public is a public key rather than the
// secret value itself, which symmetric-key and plain secrets keep in both
// Private and Public.
func hasPublicKey(s api.Secret) bool {
	return manifest.IsCertificateType(s.Type) || (len(s.Cert) > 0 && len(s.Public) > 0)
}

func printSecrets(w io.Writer, secrets map[string]api.Secret, file string) {
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s := secrets[name]
		fmt.Fprintf(w, "%s:\n", name)
		fmt.Fprintf(w, "  Type:          %s\n", orDash(s.Type))
		if s.Size > 0 {
			fmt.Fprintf(w, "  Size:          %d bits\n", s.Size)
		}
		fmt.Fprintf(w, "  Shared:        %t\n", s.Shared)
		fmt.Fprintf(w, "  User-defined:  %t\n", s.UserDefined)
		if c, err := s.Certificate(); err != nil {
			fmt.Fprintf(w, "  Certificate:   unreadable (%v)\n", err)
		} else if c != nil {
			fmt.Fprintf(w, "  Certificate:   subject %q, issuer %q, valid until %s\n", c.Subject.String(), c.Issuer.String(), c.NotAfter.UTC().Format("2006-01-02"))
			fmt.Fprint(w, indent(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert})), "    "))
		}
		if hasPublicKey(s) && len(s.Public) > 0 {
			fmt.Fprintln(w, "  Public key:")
			fmt.Fprint(w, indent(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: s.Public})), "    "))
		}
		if len(s.Private) > 0 {
			where := "not shown; save it with --output FILE"
			if file != "" {
				where = "written to " + outputName(file)
			}
			what := "Private key:"
			if !hasPublicKey(s) {
				what = "Value:"
			}
			fmt.Fprintf(w, "  %-14s %d bytes, %s\n", what, len(s.Private), where)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func indent(text, prefix string) string {
	lines := strings.SplitAfter(text, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

func newSecretSetCmd(out *output, connect connectFunc, auth *userAuth) *cobra.Command {
	var fromPEM string
	cmd := &cobra.Command{
		Use:   "set <secret-file> <IP:PORT>",
		Short: "Set user-defined secrets",
		Long: `Set user-defined secrets the user may WriteSecret.

The file is a JSON object of secret name to value: {"Cert", "Private"} (base64
DER certificate and private key) for certificate secrets, {"Key"} (base64)
for symmetric-key and plain secrets. With --from-pem NAME the file is PEM
instead: its first CERTIFICATE and first private key block become secret
NAME; the key must belong to the certificate.`,
		Example: "  marblerun secret set secrets.json localhost:4433 -c admin.crt -k admin.key\n" +
			"  marblerun secret set web.pem localhost:4433 --from-pem webCert -c admin.crt -k admin.key",
		Args: exactArgs(2, "<secret-file> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			data, err := readFile("secret file", args[0])
			if err != nil {
				return err
			}
			var secrets map[string]api.UserSecret
			if fromPEM != "" {
				s, err := userSecretFromPEM(data)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				secrets = map[string]api.UserSecret{fromPEM: s}
			} else if secrets, err = api.ParseUserSecrets(data); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			cert, err := auth.load()
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinCheck)
			if err != nil {
				return err
			}
			if err := api.SecretSet(cmd.Context(), addr, att.Root, cert, secrets); err != nil {
				return err
			}
			names := make([]string, 0, len(secrets))
			for n := range secrets {
				names = append(names, n)
			}
			sort.Strings(names)
			if format(cmd).json() {
				return printJSON(out.stdout(), struct {
					Set []string `json:"set"`
				}{names})
			}
			fmt.Fprintf(out.stdout(), "Secret(s) successfully set: %s\n", strings.Join(names, ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&fromPEM, "from-pem", "", "read the file as PEM and set it as the certificate secret of this name")
	addFormatFlag(cmd)
	return cmd
}

// userSecretFromPEM builds a certificate secret from the first certificate
// and the first private key in PEM data. The key is stored as PKCS#8.
func userSecretFromPEM(data []byte) (api.UserSecret, error) {
	var certBlock, keyBlock *pem.Block
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE" && certBlock == nil:
			certBlock = b
		case strings.HasSuffix(b.Type, "PRIVATE KEY") && keyBlock == nil:
			keyBlock = b
		}
	}
	if certBlock == nil {
		return api.UserSecret{}, errors.New("no PEM CERTIFICATE block")
	}
	if keyBlock == nil {
		return api.UserSecret{}, errors.New("no PEM private key block")
	}
	if keyBlock.Type == "ENCRYPTED PRIVATE KEY" || keyBlock.Headers["Proc-Type"] != "" {
		return api.UserSecret{}, errors.New("the private key is encrypted; decrypt it first (e.g. openssl pkey -in key.pem)")
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(certBlock), pem.EncodeToMemory(keyBlock))
	if err != nil {
		return api.UserSecret{}, fmt.Errorf("the private key does not belong to the certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		return api.UserSecret{}, fmt.Errorf("encoding the private key: %w", err)
	}
	return api.UserSecret{Cert: certBlock.Bytes, Private: pkcs8}, nil
}
