package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// importTimeout bounds the import of a single Coordinator's state at start.
const importTimeout = 5 * kubeTimeout

// importSealDir moves the state of the single Coordinator in
// cfg.ImportSealDir into the shared store st, unless the shared state
// exists already: with the same data key the import was done before (a
// restart, or another replica did it) and it carries on; with another it
// refuses. The folder is only read. The data key, seal mode and recovery
// data stay the same, so the owners' recovery secrets open the imported
// state.
func importSealDir(ctx context.Context, cfg Config, st store.Store, opts store.Options, log *slog.Logger) error {
	ks, ok := st.(*store.KubeStore)
	if !ok {
		return fmt.Errorf("%s needs the %s store of the distributed mode", EnvImportSealDir, StoreK8sSecret)
	}
	ctx, cancel := context.WithTimeout(ctx, importTimeout)
	defer cancel()
	dir := cfg.ImportSealDir
	where := fmt.Sprintf("Secret %s/%s", cfg.KubeNamespace, cfg.KubeStateName)
	fileKC, err := store.FileKeyCheck(dir)
	switch {
	case errors.Is(err, store.ErrNoState):
		return fmt.Errorf("%s=%s holds no Coordinator state (no sealed_data): point it at the seal folder of the single Coordinator, or unset it", EnvImportSealDir, dir)
	case err != nil:
		return fmt.Errorf("%s=%s: reading the single Coordinator's state: %w", EnvImportSealDir, dir, err)
	}
	refuse := func(shared store.KeyCheck) error {
		return fmt.Errorf("%s=%s: the shared state in %s exists under another data key (key check %s) than the state in that folder (key check %s), so it was not imported from there; "+
			"remove the setting %s to run on the shared state as it is, or remove the shared state (uninstall) to import the folder",
			EnvImportSealDir, dir, where, shared, fileKC, EnvImportSealDir)
	}
	sharedKC, exists, err := ks.HeadKeyCheck(ctx)
	if err != nil {
		return fmt.Errorf("%s: looking for the shared state: %w", EnvImportSealDir, err)
	}
	if exists {
		if sharedKC != fileKC {
			return refuse(sharedKC)
		}
		log.Info("the single Coordinator's state was imported before; carrying on with the shared state (the setting can be removed)",
			"importSealDir", dir, "stateSecret", where, "keyCheck", fileKC.String())
		return nil
	}
	exp, err := store.ExportFile(dir, opts)
	switch {
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%s=%s: a Coordinator still uses that folder: stop the single Coordinator before importing its state: %w", EnvImportSealDir, dir, err)
	case errors.Is(err, store.ErrCorrupt):
		return fmt.Errorf("%s=%s: the single Coordinator's state is damaged; nothing was imported: %w", EnvImportSealDir, dir, err)
	case errors.Is(err, store.ErrUnseal):
		return fmt.Errorf("%s=%s: this Coordinator cannot unseal the single Coordinator's state (it was sealed on another machine or by another enclave, or needs recovery); nothing was imported: "+
			"run the import where the single Coordinator ran, with the same Coordinator enclave, or first recover the single Coordinator with the owners' recovery keys and import after it has sealed its state again: %w",
			EnvImportSealDir, dir, err)
	case err != nil:
		return fmt.Errorf("%s=%s: reading the single Coordinator's state: %w", EnvImportSealDir, dir, err)
	}
	wrote, err := ks.Import(ctx, exp)
	var conflict store.KeyCheck
	switch {
	case errors.Is(err, store.ErrImportConflict):
		if kc, ok, kerr := ks.HeadKeyCheck(ctx); kerr == nil && ok {
			conflict = kc
		}
		return refuse(conflict)
	case err != nil:
		return fmt.Errorf("%s=%s: importing the single Coordinator's state into %s: %w", EnvImportSealDir, dir, where, err)
	case wrote:
		log.Warn("imported the single Coordinator's state into the shared state with its data key, seal mode and recovery data; remove the setting once every replica runs",
			"importSealDir", dir, "stateSecret", where, "keyCheck", fileKC.String(), "sealMode", string(exp.Mode), "entries", len(exp.State))
	default:
		log.Info("another Coordinator imported the same state meanwhile; carrying on with the shared state", "importSealDir", dir, "stateSecret", where)
	}
	return nil
}
