// Package flags names the command line's settings in one place: the
// command line defines its flags with these names, and every error message
// or log line elsewhere that tells a person which setting to change names
// it with them, so that the two cannot drift.
package flags

// Flag names, without the leading "--".
const (
	Addr               = "addr"
	DataDir            = "data-dir"
	Workers            = "workers"
	NATSListen         = "nats-listen"
	NATS               = "nats"
	SleepScale         = "sleep-scale"
	MaxPartitions      = "max-partitions"
	AckWait            = "ack-wait"
	AuthToken          = "auth-token"
	AuthTokenFile      = "auth-token-file"
	Insecure           = "insecure"
	NATSToken          = "nats-token"
	MaxAttempts        = "max-attempts"
	MaxLostRuns        = "max-lost-runs"
	SubmitRate         = "submit-rate"
	MaxQueuedTasks     = "max-queued-tasks"
	MaxUnfinishedJobs  = "max-unfinished-jobs"
	MaxWebsockets      = "max-websockets"
	MaxFileMB          = "max-file-mb"
	Routes             = "routes"
	ClusterListen      = "cluster-listen"
	NATSTLSCert        = "nats-tls-cert"
	NATSTLSKey         = "nats-tls-key"
	NATSTLSCA          = "nats-tls-ca"
	TLSCert            = "tls-cert"
	TLSKey             = "tls-key"
	DebugAddr          = "debug-addr"
	AcceptDamagedState = "accept-damaged-state"
	AllowOrigin        = "allow-origin"
	TrustedProxy       = "trusted-proxy"
	Retention          = "retention"
	GroupBatches       = "group-batches"
	RecentJobs         = "recent-jobs"
	ArchiveAfter       = "archive-after"
	WasmMemory         = "wasm-memory-mb"
	MaxKindSize        = "max-kind-mb"
	TaskTimeout        = "task-timeout"
	PriorityAging      = "priority-aging"
	KindLimit          = "kind-limit"
	SortBuffer         = "sort-buffer-mb"
	MemoryLimit        = "memory-limit-mb"
	// Token is the client commands' flag for the server's auth token.
	Token = "token"
	// TLSCA is the client commands' flag for the CA that verifies an
	// https server's certificate.
	TLSCA = "tls-ca"
)

// Env is the environment variable that sets flag name: MRCLUSTER_ and
// the name in capitals, with '_' for '-'.
func Env(name string) string {
	out := []byte("MRCLUSTER_")
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '-':
			c = '_'
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}
