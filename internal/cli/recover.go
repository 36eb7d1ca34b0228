package cli

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newRecoverCmd(connect connectFunc, rep *reporter) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "recover <recovery-secret-file> <IP:PORT>",
		Short: "Upload a recovery secret to a Coordinator in recovery mode",
		Long: `Recover a Coordinator that cannot unseal its state (state 1).

The file holds your recovery secret as "manifest set" returned it for your
recovery key: encrypted (binary, or its base64 text), or already decrypted
(16, 32 or 33 bytes). It is decrypted with --key (RSA-OAEP-SHA256), signed with
the same key (PKCS#1 v1.5, SHA-256) and uploaded after the Coordinator's quote
was verified. The pinned certificate is neither checked nor replaced: in
recovery mode the Coordinator serves a temporary root until it is recovered.`,
		Example: "  marblerun recover recovery_key_decrypted localhost:4433 --key private.pem",
		Args:    exactArgs(2, "<recovery-secret-file> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			key, err := loadRecoveryKey(keyFile)
			if err != nil {
				return err
			}
			secret, err := readRecoverySecret(args[0], key)
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinIgnore)
			if err != nil {
				return err
			}
			res, err := api.Recover(cmd.Context(), addr, att.Root, secret, key)
			if err != nil {
				return err
			}
			return rep.reportRecovery(cmd, res)
		},
	}
	cmd.Flags().StringVarP(&keyFile, "key", "k", "", "PEM RSA private key of your recovery key (required)")
	_ = cmd.MarkFlagRequired("key")
	addFormatFlag(cmd)
	return cmd
}

func (r *reporter) reportRecovery(cmd *cobra.Command, res *api.RecoveryResult) error {
	if format(cmd).json() {
		return printJSON(r.out.stdout(), struct {
			Remaining int    `json:"remaining"`
			Message   string `json:"message,omitempty"`
		}{res.Remaining, res.Message})
	}
	if res.Remaining > 0 {
		fmt.Fprintf(r.out.stdout(), "Secret successfully uploaded: %d more secret(s) needed to recover the Coordinator.\n", res.Remaining)
		return nil
	}
	fmt.Fprintln(r.out.stdout(), "Recovery successful.")
	return nil
}

func newRecoverWithSignatureCmd(out *output, connect connectFunc, rep *reporter) *cobra.Command {
	var sigFile string
	cmd := &cobra.Command{
		Use:   "recover-with-signature <recovery-secret-file> <IP:PORT>",
		Short: "Upload a prepared recovery secret and its signature (air-gapped recovery)",
		Long: `Upload a recovery secret and its signature prepared elsewhere, e.g. on an
air-gapped machine that holds the recovery key:

  1. marblerun recover-with-signature public-key <IP:PORT> -o coordinator.pub
  2. (offline) marblerun recover-with-signature encrypt-secret secret -k key.pem --coordinator-pub-key coordinator.pub -o secret.enc
  3. (offline) marblerun recover-with-signature sign-secret secret -k key.pem -o secret.sig
  4. marblerun recover-with-signature secret.enc <IP:PORT> --signature secret.sig

The Coordinator's quote is verified first; the pinned certificate is neither
checked nor replaced.`,
		Args: exactArgs(2, "<recovery-secret-file> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			secret, err := readFile("recovery secret", args[0])
			if err != nil {
				return err
			}
			sig, err := readFile("signature (--signature)", sigFile)
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinIgnore)
			if err != nil {
				return err
			}
			res, err := api.RecoverWithSignature(cmd.Context(), addr, att.Root, secret, sig)
			if err != nil {
				return err
			}
			return rep.reportRecovery(cmd, res)
		},
	}
	cmd.Flags().StringVarP(&sigFile, "signature", "s", "", "file with the signature of the plain recovery secret (required)")
	_ = cmd.MarkFlagRequired("signature")
	addFormatFlag(cmd)
	cmd.AddCommand(newRecoveryPublicKeyCmd(out, connect), newEncryptSecretCmd(out), newSignSecretCmd(out))
	return cmd
}

func newRecoveryPublicKeyCmd(out *output, connect connectFunc) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "public-key <IP:PORT>",
		Short: "Get the ephemeral public key of a Coordinator in recovery mode",
		Long: `Verify the Coordinator and get the RSA public key it generated for this
recovery, to encrypt recovery secrets for it (PEM, written to --output or
printed).`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			att, err := connect(addr).attest(cmd.Context(), addr, pinIgnore)
			if err != nil {
				return err
			}
			pub, err := api.RecoveryPublicKey(cmd.Context(), addr, att.Root)
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return fmt.Errorf("encoding the public key: %w", err)
			}
			data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			if output == "" {
				_, err := out.stdout().Write(data)
				return err
			}
			if err := out.writeOutput(output, data, 0o644); err != nil {
				return err
			}
			out.warnf("Public key written to %s.", outputName(output))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the public key to (default: print it)")
	return cmd
}

func newEncryptSecretCmd(out *output) *cobra.Command {
	var keyFile, pubFile, output string
	cmd := &cobra.Command{
		Use:   "encrypt-secret <recovery-secret-file>",
		Short: "Re-encrypt your recovery secret for the Coordinator's ephemeral key, offline",
		Args:  exactArgs(1, "<recovery-secret-file>"),
		RunE: func(_ *cobra.Command, args []string) error {
			key, err := loadRecoveryKey(keyFile)
			if err != nil {
				return err
			}
			secret, err := readRecoverySecret(args[0], key)
			if err != nil {
				return err
			}
			pub, err := loadRSAPublicKey(pubFile)
			if err != nil {
				return err
			}
			enc, err := api.EncryptRecoverySecret(secret, pub)
			if err != nil {
				return err
			}
			if err := out.writeOutput(output, enc, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(out.reportWriter(output), "Encrypted recovery secret written to %s.\n", outputName(output))
			return nil
		},
	}
	cmd.Flags().StringVarP(&keyFile, "key", "k", "", "PEM RSA private key of your recovery key (required)")
	cmd.Flags().StringVar(&pubFile, "coordinator-pub-key", "", "PEM public key from 'recover-with-signature public-key' (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the encrypted secret to (required)")
	for _, f := range []string{"key", "coordinator-pub-key", "output"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func newSignSecretCmd(out *output) *cobra.Command {
	var keyFile, output string
	cmd := &cobra.Command{
		Use:   "sign-secret <recovery-secret-file>",
		Short: "Sign your plain recovery secret with your recovery key, offline",
		Args:  exactArgs(1, "<recovery-secret-file>"),
		RunE: func(_ *cobra.Command, args []string) error {
			key, err := loadRecoveryKey(keyFile)
			if err != nil {
				return err
			}
			secret, err := readRecoverySecret(args[0], key)
			if err != nil {
				return err
			}
			sig, err := api.SignRecoverySecret(secret, key)
			if err != nil {
				return err
			}
			if err := out.writeOutput(output, sig, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(out.reportWriter(output), "Signature written to %s.\n", outputName(output))
			return nil
		},
	}
	cmd.Flags().StringVarP(&keyFile, "key", "k", "", "PEM RSA private key of your recovery key (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the signature to (required)")
	for _, f := range []string{"key", "output"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// loadRecoveryKey reads a PEM RSA private key (PKCS#1 or PKCS#8).
func loadRecoveryKey(path string) (*rsa.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("pass your recovery key's private key with --key")
	}
	data, err := readFile("recovery key (--key)", path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s is not a PEM private key", path)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s holds a %T key; recovery keys are RSA", path, k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("%s holds a PEM %q block, not an RSA private key", path, block.Type)
}

// loadRSAPublicKey reads a PEM PKIX RSA public key.
func loadRSAPublicKey(path string) (*rsa.PublicKey, error) {
	data, err := readFile("public key", path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s is not a PEM PUBLIC KEY", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T key, expected RSA", path, pub)
	}
	return rsaPub, nil
}

// readRecoverySecret returns the plain recovery secret in path: as is if it
// has a plain secret's length, else decrypted with key. An encrypted
// secret may be binary or base64 text.
func readRecoverySecret(path string, key *rsa.PrivateKey) ([]byte, error) {
	data, err := readFile("recovery secret", path)
	if err != nil {
		return nil, err
	}
	if api.IsPlainRecoverySecret(data) {
		return data, nil
	}
	ciphertext := data
	if len(data) != key.Size() {
		if dec, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data))); err == nil && len(dec) == key.Size() {
			ciphertext = dec
		}
	}
	if len(ciphertext) != key.Size() {
		return nil, fmt.Errorf("%s holds %d bytes: neither a plain recovery secret (16, 32 or 33 bytes) nor one encrypted for this %d-bit key (%d bytes, or its base64)",
			path, len(data), key.Size()*8, key.Size())
	}
	plain, err := api.DecryptRecoverySecret(ciphertext, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return plain, nil
}
