package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newManifestCmd(out *output, connect connectFunc, rep *reporter) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Set, get, verify and update the Coordinator's manifest",
	}
	cmd.AddCommand(
		newManifestSetCmd(out, connect, rep),
		newManifestGetCmd(out, connect),
		newManifestVerifyCmd(out, connect),
		newManifestSignatureCmd(out),
		newManifestLogCmd(out, connect),
		newManifestUpdateCmd(out, connect, rep),
	)
	return cmd
}

// recoveryData is the JSON written for recovery secrets, as MarbleRun
// writes it.
type recoveryData struct {
	RecoverySecrets map[string][]byte
}

func newManifestSetCmd(out *output, connect connectFunc, rep *reporter) *cobra.Command {
	var recoveryFile string
	cmd := &cobra.Command{
		Use:   "set <manifest.json|manifest.yaml> <IP:PORT>",
		Short: "Verify the Coordinator and set its first manifest",
		Long: `Verify the Coordinator, then set its manifest. This claims a fresh
Coordinator (or replaces the state of one in recovery mode): whoever sets the
first manifest owns the deployment.

The manifest is checked locally first. The recovery secrets the Coordinator
returns (encrypted for the manifest's RecoveryKeys) are written to
--recoverydata, or printed. On success the Coordinator's certificates are
pinned in --coordinator-cert.`,
		Example: "  marblerun manifest set manifest.json localhost:4433 --recoverydata recovery.json",
		Args:    exactArgs(2, "<manifest> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			raw, err := loadManifest(args[0])
			if err != nil {
				return err
			}
			m, err := checkManifest(args[0], raw)
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinLater)
			if err != nil {
				return err
			}
			secrets, err := api.ManifestSet(cmd.Context(), addr, att.Root, raw)
			if err != nil {
				return err
			}
			if err := conn.pin(att); err != nil {
				return err
			}
			if note := m.TTLSNote(); note != "" {
				out.warnf("Note: %s.", note)
			}
			return rep.reportRecoveryData(format(cmd), api.ManifestFingerprint(raw), secrets, recoveryFile, "Manifest successfully set.")
		},
	}
	cmd.Flags().StringVarP(&recoveryFile, "recoverydata", "r", "", "file to write the recovery data to (default: print it)")
	addFormatFlag(cmd)
	return cmd
}

// format returns the --format flag of cmd.
func format(cmd *cobra.Command) *formatFlag {
	if f, ok := cmd.Flags().Lookup("format").Value.(*formatFlag); ok {
		return f
	}
	return &formatFlag{value: formatText}
}

// reporter prints the outcomes of manifest sets, updates and recoveries,
// and writes the recovery data they return.
type reporter struct{ out *output }

// reportRecoveryData prints the outcome of a manifest set or update and
// writes or prints the recovery secrets.
func (r *reporter) reportRecoveryData(f *formatFlag, signature string, secrets map[string][]byte, file, done string) error {
	if len(secrets) > 0 && file != "" {
		if err := r.writeRecoveryData(file, secrets); err != nil {
			return err
		}
	}
	if f.json() {
		out := struct {
			ManifestSignature string            `json:"manifestSignature,omitempty"`
			RecoverySecrets   map[string][]byte `json:"recoverySecrets,omitempty"`
			RecoveryDataFile  string            `json:"recoveryDataFile,omitempty"`
		}{ManifestSignature: signature}
		if len(secrets) > 0 {
			if file != "" {
				out.RecoveryDataFile = file
			} else {
				out.RecoverySecrets = secrets
			}
		}
		return printJSON(r.out.stdout(), out)
	}
	w := r.out.stdout()
	if signature != "" {
		fmt.Fprintf(w, "Manifest signature: %s\n", signature)
	}
	fmt.Fprintln(w, done)
	switch {
	case len(secrets) == 0:
	case file != "":
		fmt.Fprintf(w, "Recovery data saved to %s. Keep it safe: each recovery key owner needs their secret to recover the Coordinator.\n", file)
	default:
		fmt.Fprintln(w, "Recovery data (each secret is encrypted for its recovery key; keep it safe):")
		if err := printJSON(w, recoveryData{secrets}); err != nil {
			return err
		}
	}
	return nil
}

// writeRecoveryData writes recovery secrets to file as MarbleRun does.
func (r *reporter) writeRecoveryData(file string, secrets map[string][]byte) error {
	out, err := json.MarshalIndent(recoveryData{secrets}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding recovery data: %w", err)
	}
	if err := r.out.writeOutput(file, append(out, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving recovery data: %w", err)
	}
	return nil
}

func newManifestGetCmd(out *output, connect connectFunc) *cobra.Command {
	var (
		withSignature bool
		displayUpdate bool
		output        string
		keepCert      bool
	)
	cmd := &cobra.Command{
		Use:   "get <IP:PORT>",
		Short: "Verify the Coordinator and get its manifest",
		Long: `Verify the Coordinator and print its manifest, or write it to --output.

The manifest is printed (or written) exactly as it was set, without an added
newline, so that its signature matches the Coordinator's. --signature wraps it as {"ManifestSignature", "Manifest"};
--display-update shows the security versions raised by package updates since
(these change the printed manifest, not the Coordinator's).`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			conn := connect(addr)
			if keepCert {
				out.warnf("Flag --keep-cert is deprecated and does nothing: the Coordinator's certificates are pinned on first verification.")
			}
			att, err := conn.attest(cmd.Context(), addr, pinCheck)
			if err != nil {
				return err
			}
			m, err := api.ManifestGet(cmd.Context(), addr, att.Root)
			if err != nil {
				return err
			}
			data := m.Raw
			if displayUpdate {
				log, err := api.UpdateLog(cmd.Context(), addr, att.Root)
				if err != nil {
					return err
				}
				if data, err = applySecurityVersionUpdates(m.Raw, log); err != nil {
					return err
				}
			}
			if withSignature {
				if data, err = json.MarshalIndent(struct {
					ManifestSignature          string
					ManifestSignatureRootECDSA []byte `json:",omitempty"`
					Manifest                   json.RawMessage
				}{m.Fingerprint, m.RootSignature, compactJSON(data)}, "", "  "); err != nil {
					return fmt.Errorf("encoding output: %w", err)
				}
			}
			if (withSignature || displayUpdate) && !bytes.HasSuffix(data, []byte("\n")) {
				data = append(data, '\n')
			}
			if output != "" {
				if err := out.writeOutput(output, data, 0o644); err != nil {
					return err
				}
				out.warnf("Manifest written to %s.", outputName(output))
				return nil
			}
			_, err = out.stdout().Write(data)
			return err
		},
	}
	cmd.Flags().BoolVarP(&withSignature, "signature", "s", false, "wrap the manifest with its signature (hex SHA-256)")
	cmd.Flags().BoolVarP(&displayUpdate, "display-update", "u", false, "show the security versions raised by package updates")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the manifest to (default: print it)")
	cmd.Flags().BoolVar(&keepCert, "keep-cert", false, "deprecated: the certificates are pinned on first verification")
	_ = cmd.Flags().MarkHidden("keep-cert")
	return cmd
}

// compactJSON returns raw without insignificant whitespace, or raw itself
// if it is not JSON.
func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

// applySecurityVersionUpdates returns the manifest with the security
// versions that the update log's entries after the last full update
// ("SecurityVersion increased" or "lowered") set: what the Coordinator
// enforces.
func applySecurityVersionUpdates(raw []byte, log []string) ([]byte, error) {
	doc, err := decodeManifestDoc(raw)
	if err != nil {
		return nil, err
	}
	packages, _ := memberCI(doc, "Packages").(map[string]any)
	changed := false
	for _, line := range log {
		var e map[string]any
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if d.Decode(&e) != nil {
			continue
		}
		switch msg, _ := e["update"].(string); msg {
		case "Complete Manifest updated":
			// The served manifest is the last one set or updated in full;
			// only the package updates after it change what is enforced.
			if doc, err = decodeManifestDoc(raw); err != nil {
				return nil, err
			}
			packages, _ = memberCI(doc, "Packages").(map[string]any)
			changed = false
			continue
		case "SecurityVersion increased", "SecurityVersion lowered":
		default:
			continue
		}
		name, _ := e["package"].(string)
		version, ok := e["new version"].(json.Number)
		pkg, isMap := packages[name].(map[string]any)
		if !ok || !isMap {
			continue
		}
		key := "SecurityVersion"
		for k := range pkg {
			if strings.EqualFold(k, key) {
				key = k
			}
		}
		pkg[key] = version
		changed = true
	}
	if !changed {
		return raw, nil
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	return out, nil
}

// decodeManifestDoc decodes a manifest as generic JSON, numbers kept as
// they are written.
func decodeManifestDoc(raw []byte) (map[string]any, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding the manifest: %w", err)
	}
	return doc, nil
}

// memberCI returns the member of obj whose name equals key ignoring case.
func memberCI(obj map[string]any, key string) any {
	if v, ok := obj[key]; ok {
		return v
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.EqualFold(k, key) {
			return obj[k]
		}
	}
	return nil
}

func newManifestVerifyCmd(out *output, connect connectFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify <manifest-file|manifest-signature> <IP:PORT>",
		Short: "Verify the Coordinator and that it runs the given manifest, then pin it",
		Long: `Verify the Coordinator's attestation and check that it runs the given
manifest (a file, or its signature: 64 hex digits). On success the
Coordinator's certificates are pinned in --coordinator-cert, replacing any
pinned before: this is how a re-installed Coordinator is trusted again.`,
		Args: exactArgs(2, "<manifest-file|manifest-signature> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			want, err := expectedSignature(args[0])
			if err != nil {
				return err
			}
			att, err := conn.attest(cmd.Context(), addr, pinLater)
			if err != nil {
				return err
			}
			m, err := api.ManifestGet(cmd.Context(), addr, att.Root)
			if err != nil {
				return err
			}
			if m.Fingerprint != want {
				return withHint(fmt.Errorf("the Coordinator at %s runs manifest %s, not %s", addr, m.Fingerprint, want),
					"Nothing was pinned. Check that you have the manifest the Coordinator should run ('marblerun manifest signature <file>' prints a file's signature).")
			}
			if err := conn.pin(att); err != nil {
				return err
			}
			if format(cmd).json() {
				return printJSON(out.stdout(), struct {
					OK                bool   `json:"ok"`
					ManifestSignature string `json:"manifestSignature"`
					RootFingerprint   string `json:"rootFingerprint"`
				}{true, m.Fingerprint, api.Fingerprint(att.Root)})
			}
			fmt.Fprintln(out.stdout(), "OK")
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}

// expectedSignature returns the signature named by arg: a file's signature,
// or arg itself if it is 64 hex digits and no such file exists.
func expectedSignature(arg string) (string, error) {
	raw, err := loadManifest(arg)
	if err == nil {
		return api.ManifestFingerprint(raw), nil
	}
	if b, herr := hex.DecodeString(arg); herr == nil && len(b) == 32 {
		return strings.ToLower(arg), nil
	}
	return "", err
}

func newManifestSignatureCmd(out *output) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "signature <manifest.json|manifest.yaml>",
		Short: "Print a manifest's signature (hex SHA-256), offline",
		Long: `Print the signature of a manifest file: the hex SHA-256 of its JSON bytes.
A YAML manifest is converted to JSON first, as "manifest set" does.`,
		Args: exactArgs(1, "<manifest>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := loadManifest(args[0])
			if err != nil {
				return err
			}
			sig := api.ManifestFingerprint(raw)
			if format(cmd).json() {
				return printJSON(out.stdout(), struct {
					ManifestSignature string `json:"manifestSignature"`
				}{sig})
			}
			fmt.Fprintln(out.stdout(), sig)
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}

func newManifestLogCmd(out *output, connect connectFunc) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "log <IP:PORT>",
		Short: "Print the Coordinator's update log (uses the pinned certificate)",
		Long: `Print the Coordinator's update log: the initial manifest, package and full
updates, and secrets set by users. Trusts the pinned certificate without
verifying a quote. --output writes the log (one JSON object per line).`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			root, err := connect(addr).trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			log, err := api.UpdateLog(cmd.Context(), addr, root)
			if err != nil {
				return err
			}
			if output != "" {
				var b strings.Builder
				for _, l := range log {
					b.WriteString(l)
					b.WriteByte('\n')
				}
				if err := out.writeOutput(output, []byte(b.String()), 0o644); err != nil {
					return err
				}
				out.warnf("Update log written to %s.", outputName(output))
				return nil
			}
			if format(cmd).json() {
				entries := make([]json.RawMessage, 0, len(log))
				for _, l := range log {
					if !json.Valid([]byte(l)) {
						return errors.New("the Coordinator's update log has an entry that is not JSON")
					}
					entries = append(entries, json.RawMessage(l))
				}
				return printJSON(out.stdout(), struct {
					UpdateLog []json.RawMessage `json:"updateLog"`
				}{entries})
			}
			w := out.stdout()
			fmt.Fprintln(w, "Update log:")
			for _, l := range log {
				fmt.Fprintln(w, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the log to (default: print it)")
	addFormatFlag(cmd)
	return cmd
}
