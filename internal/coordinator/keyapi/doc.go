// Package keyapi is the key API between the replicas of a distributed
// Coordinator: a replica that cannot unseal the key-encryption key (KEK)
// of the shared state, because it runs on a node whose seal key has no
// entry yet, takes the KEK from a live peer.
//
// # Protocol
//
// The service is keyapi.KeyAPI/GetKeyEncryptionKey (keyapipb, generated
// from keyapi.proto by protoc like the mesh API), served over TLS 1.3 on
// the key API address (EDG_COORDINATOR_KEY_API_ADDR, ":5433" by default).
// It answers the KEK and the generation of the newest state the replica
// has seen, or FAILED_PRECONDITION while the replica holds no key.
// GetReplicaStatus, on the same attested connection, answers how the
// replica describes itself in status (api/wire ReplicaStatus), whether it
// holds the key or not.
//
// Each replica creates an ephemeral P-256 key at start-up and a
// self-signed certificate for it that carries, in extension OIDEvidence,
// the replica's evidence over SHA-256 of the certificate's
// SubjectPublicKeyInfo (attestation.BindHash). Both sides present their
// certificate and check the other's in the TLS handshake, before any
// request is read: the handshake proves possession of the private key,
// and the evidence proves that the key was created inside an enclave that
// satisfies PeerPolicy. The policy is derived from the replica's own
// identity, which it learns by verifying its own evidence: in ProductKey
// seal mode the peer must have the same SignerID and ProductID and at
// least the same SecurityVersion, in UniqueKey (and Disabled) mode the
// same UniqueID; in every mode the same Debug attribute and a TCB status
// of attestation.DefaultAcceptedTCBStatuses. The rule holds in both
// directions, so a replica of a higher SecurityVersion does not take the
// key from an older one: during an upgrade to a higher SecurityVersion,
// new replicas must be able to unseal the KEK themselves (a ProductKey
// seal of the same signer does, on a node that already has an entry).
//
// In simulation the same protocol runs without evidence: the certificates
// carry none, nothing is checked, and a warning says so.
//
// # Peers
//
// Peers are the ready endpoints of every EndpointSlice labelled
// kubernetes.io/service-name=<EDG_K8S_SERVICE_NAME> (default
// coordinator-key-api), read page by page, with the slice's port named
// "grpc", except the replica itself (POD_IP, POD_NAME, or its own
// listener). They are tried one after another in random order, each
// within a bounded time.
//
// Status (Replicas) asks every endpoint of those slices, ready or not, at
// most 32, in parallel within StatusTimeout; one that does not answer is
// described by its Pod name (the endpoint's target), else its address,
// as not ready with the reason "unreachable: ...".
//
// # Joining and rollback
//
// Whenever the core needs a key, Run asks the peers round after round
// (Config.Interval, ±20 %) and joins with the first key the core accepts;
// JoinWithKey refuses a state older than the generation the peer told. A
// replica that opened the state by itself asks the ready peers once, at
// start-up, for their generation (SyncGeneration) and raises its floor to
// the highest: a state rolled back behind a live replica's is refused. A
// rollback stays undetected when no replica lives: a replica that starts
// alone trusts the newest state it can read, so someone who can write the
// state's objects while every replica is down can bring back any earlier
// state that was sealed under a KEK the starting replica can unseal.
//
// # Recovery with several replicas
//
// When every replica runs on a new node, none holds a key and all of them
// wait in recovery. The owners upload their recovery secrets to any
// replica, through the client API Service. A replica that takes a secret
// while more are missing calls ExchangeRecoverySecrets on every peer: it
// hands over the secrets it holds and receives theirs, each verified
// against the stored recovery data (the owner's signature over the
// secret) on both sides. The peers only keep what they receive; the
// replica that asked unlocks the state once it holds enough, and answers
// the owner that none is missing. The others then take the key from it
// through Run, without scaling to one replica. A secret encrypted with
// another replica's ephemeral recovery key (recover/public-key answered
// by one replica, the upload reaching another) is decrypted by that peer
// (DecryptRecoverySecret), which answers only with a secret of the stored
// recovery keys. Secrets pass only between attested peers, which could
// unlock the state with them themselves; they live in memory only.
package keyapi
