package dlb

// #include "dlbgo.h"
import "C"

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Host event kinds (HostEvent.Event). New kinds may be added: ignore the unknown.
const (
	// EventAdded: a replica joined the list (at start-up too); a pool for it may be opened.
	EventAdded = "added"
	// EventRemoved: the replica left the list; it is no longer picked and is being drained.
	EventRemoved = "removed"
	// EventDrained: a removed replica is drained; a pool for it may be closed.
	EventDrained = "drained"
	// EventQuarantined: the replica was set aside (Reason says why).
	EventQuarantined = "quarantined"
	// EventReadmitted: a quarantined replica serves again.
	EventReadmitted = "readmitted"
	// EventIdentityChanged: the replica's address now reaches another server (Server).
	EventIdentityChanged = "identity_changed"
)

// HostEvent is one host lifecycle event. It contains no secrets.
type HostEvent struct {
	// Event is one of the Event* kinds.
	Event string `json:"event"`
	// HostID is the host's id, the same as Route.HostID for routes to it: stable while the
	// balancer knows the host, never reused within the process.
	HostID uint64 `json:"host_id"`
	// Addr is "host:port", as the driver connects.
	Addr string `json:"addr"`
	// Role is "replica".
	Role string `json:"role"`
	// Health is the state after the event: "unknown", "healthy" or "quarantined".
	Health string `json:"health"`
	// Reason is the quarantine reason ("lag", "unreachable", ...) when quarantined.
	Reason string `json:"reason,omitempty"`
	// LagBytes and LagSeconds are the replay lag at the last check (0 when unknown;
	// LagSeconds is nil when the replica is behind with no replay time).
	LagBytes   uint64   `json:"lag_bytes"`
	LagSeconds *float64 `json:"lag_seconds"`
	// Error is the last probe's error, if any.
	Error string `json:"error,omitempty"`
	// Server names the server the address reaches, when known.
	Server string `json:"server,omitempty"`
	// Dropped counts the events dropped before this one because the queue was full.
	Dropped uint64 `json:"dropped"`
}

// eventPoll bounds one wait in the C library, so that ctx and Close are noticed quickly.
const eventPoll = 100 * time.Millisecond

// NextEvent returns the balancer's next host event, waiting until one comes or ctx is done
// (then ctx.Err() is returned as is). The events wait in a queue in the library (1024 of
// them; when it is full the oldest are dropped and the next event counts them in Dropped):
// read them from one goroutine. The first events are an EventAdded per replica, from the
// check Open ran.
//
// Blocking: waits in the library at most 100 ms at a time (Close wakes it at once).
//
// Errors: ctx.Err(), ErrClosed.
func (b *Balancer) NextEvent(ctx context.Context) (HostEvent, error) {
	for {
		if err := ctx.Err(); err != nil {
			return HostEvent{}, err
		}
		wait := eventPoll
		if d, ok := ctx.Deadline(); ok {
			if left := time.Until(d); left < wait {
				wait = left
			}
		}
		if wait < 0 {
			wait = 0
		}
		ms := C.uint32_t(wait / time.Millisecond)
		text, err := b.text("NextEvent", kindEvent, func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result {
			return C.dlbgo_next_event(lb, ms, buf, n)
		})
		if err != nil {
			return HostEvent{}, err
		}
		if text == "" {
			continue
		}
		var e HostEvent
		if err := json.Unmarshal([]byte(text), &e); err != nil {
			return HostEvent{}, &Error{Op: "NextEvent", Code: ErrInternal,
				Message: "cannot parse the event: " + err.Error()}
		}
		return e, nil
	}
}

// watchers fan host events out to every WatchEvents callback, from one goroutine reading the
// queue (running while at least one callback is registered).
type watchers struct {
	mu   sync.Mutex
	fns  map[int]func(HostEvent)
	next int
	stop context.CancelFunc // the pump's; nil when none runs
	done chan struct{}
}

// WatchEvents calls fn with every host event, in order, from one goroutine shared by every
// watcher (so several parts of a program, dlbsql's pools and a logger, all see every event;
// NextEvent, by contrast, gives each event to one caller: use one or the other). fn should
// return quickly. The returned stop unregisters fn; after it returns fn is not called again.
// Watching ends when the balancer is closed.
func (b *Balancer) WatchEvents(fn func(HostEvent)) (stop func()) {
	w := &b.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[int]func(HostEvent){}
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	if w.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		w.stop, w.done = cancel, make(chan struct{})
		go b.pump(ctx, w.done)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			delete(w.fns, id)
			var wait chan struct{}
			if len(w.fns) == 0 && w.stop != nil {
				w.stop()
				wait = w.done
				w.stop, w.done = nil, nil
			}
			w.mu.Unlock()
			if wait != nil {
				<-wait
			}
		})
	}
}

func (b *Balancer) pump(ctx context.Context, done chan struct{}) {
	defer close(done)
	w := &b.watch
	for {
		e, err := b.NextEvent(ctx)
		if err != nil {
			return
		}
		w.mu.Lock()
		fns := make([]func(HostEvent), 0, len(w.fns))
		for _, fn := range w.fns {
			fns = append(fns, fn)
		}
		w.mu.Unlock()
		for _, fn := range fns {
			fn(e)
		}
	}
}
