package dlb

// #include "dlbgo.h"
import "C"

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Role is where a route sends a query: the primary or a replica.
type Role uint32

// The roles of a Route.
const (
	RolePrimary Role = C.LB_ROLE_PRIMARY
	RoleReplica Role = C.LB_ROLE_REPLICA
)

// String returns "primary" or "replica" ("unknown(N)" for a value this version does not
// know).
func (r Role) String() string {
	return cName(C.GoString(C.lb_role_str(C.uint32_t(r))), uint32(r))
}

// Reason says why a route was chosen. New reasons may be added: treat an unknown one by the
// route's Role.
type Reason uint32

// The reasons of a Route.
const (
	// ReasonRoundRobin: a replica chosen by round-robin; the read had no sticking key.
	ReasonRoundRobin Reason = C.LB_REASON_ROUND_ROBIN
	// ReasonCaughtUpCached: a replica whose cached replay position shows it has replayed
	// the key's LSN.
	ReasonCaughtUpCached Reason = C.LB_REASON_CAUGHT_UP_CACHED
	// ReasonCaughtUpLive: a replica that a live pg_last_wal_replay_lsn() check showed
	// caught up.
	ReasonCaughtUpLive Reason = C.LB_REASON_CAUGHT_UP_LIVE
	// ReasonNoLSNRecorded: a replica chosen by round-robin because the key has no
	// recorded LSN (or it expired).
	ReasonNoLSNRecorded Reason = C.LB_REASON_NO_LSN_RECORDED
	// ReasonNoReplicasConfigured: the primary, because no replicas are configured.
	ReasonNoReplicasConfigured Reason = C.LB_REASON_NO_REPLICAS_CONFIGURED
	// ReasonNoHealthyReplica: the primary, because every replica is quarantined or not
	// yet checked.
	ReasonNoHealthyReplica Reason = C.LB_REASON_NO_HEALTHY_REPLICA
	// ReasonNotCaughtUp: the primary, because no replica has replayed the key's LSN yet.
	ReasonNotCaughtUp Reason = C.LB_REASON_NOT_CAUGHT_UP
	// ReasonStoreError: the primary, because the LSN store failed so no replica can be
	// proven fresh.
	ReasonStoreError Reason = C.LB_REASON_STORE_ERROR
	// ReasonForcedPrimary: the primary, because ForcePrimary was called for the key.
	ReasonForcedPrimary Reason = C.LB_REASON_FORCED_PRIMARY
	// ReasonWrite: the primary, for a write.
	ReasonWrite Reason = C.LB_REASON_WRITE
	// ReasonReplicaUnavailable: the primary, because the picked replica could not hand
	// out a connection.
	ReasonReplicaUnavailable Reason = C.LB_REASON_REPLICA_UNAVAILABLE
)

// String returns the reason's snake-case name as used in dlb's metrics ("round_robin",
// "not_caught_up", ...; "unknown(N)" for a value this version does not know).
func (r Reason) String() string {
	return cName(C.GoString(C.lb_reason_str(C.uint32_t(r))), uint32(r))
}

func cName(name string, v uint32) string {
	if name == "unknown" {
		return "unknown(" + strconv.FormatUint(uint64(v), 10) + ")"
	}
	return name
}

// Route is where a read should go, and why.
//
// DSN contains the configured password: hand it to the driver, never to a log. String,
// GoString and Format leave it out, so printing a Route with fmt (any verb) is safe;
// MarshalJSON (and LogValue, Go 1.21 and later) show it as dlb redacts it.
type Route struct {
	// DSN is the connection string to use: the configured primary DSN with host and port
	// replaced, in the same syntax, password included.
	DSN string
	// Role is RolePrimary or RoleReplica.
	Role Role
	// Reason says why this host was chosen.
	Reason Reason
	// HostID identifies the host: the same for every route to it while the balancer knows
	// it, never reused within the process (host events carry it too). Key per-host pools on
	// it.
	HostID uint64
	// Addr is the host's "host:port", as the driver connects (no secrets).
	Addr string
}

// String returns the role and the reason, e.g. "replica (caught_up_cached)", without the
// DSN.
func (r Route) String() string {
	return r.Role.String() + " (" + r.Reason.String() + ")"
}

// GoString is used by %#v; it leaves the DSN out.
func (r Route) GoString() string {
	return "dlb.Route{DSN: <redacted, " + strconv.Itoa(len(r.DSN)) + " bytes>, Role: " +
		r.Role.String() + ", Reason: " + r.Reason.String() + "}"
}

// Format makes every fmt verb leave the DSN out: %v, %+v and %s print String, %#v GoString.
func (r Route) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "dlb.Route", r.String, r.GoString)
}

// MarshalJSON encodes the route's fields, the DSN as dlb redacts it (host, port, user and
// database shown, the password replaced by "********").
func (r Route) MarshalJSON() ([]byte, error) {
	p := plainRoute(r)
	p.DSN = redactDSN(r.DSN)
	return json.Marshal(p)
}

// plainRoute is Route without its methods: what encoding/json shows of a redacted copy.
type plainRoute Route
