//! Host lifecycle events: a callback, or a queue polled with `lb_next_event()`.

use std::ffi::{CString, c_char, c_void};

use super::balancer::{balancer, lb_balancer};
use super::boundary::OutStr;
use super::error::Failure;
use super::status::lb_status;
use crate::HostEvent;

/// How many host events a balancer's queue holds; when it is full the oldest is dropped and
/// the next event taken counts the drops in its `"dropped"` field.
pub const LB_EVENT_QUEUE_CAPACITY: usize = 1024;

const _: () = assert!(LB_EVENT_QUEUE_CAPACITY == crate::EVENT_QUEUE_CAPACITY);

/// A host event callback: `event_json` is one event as a NUL-terminated JSON object (the
/// format of `lb_next_event()`), valid only during the call; `user` is the pointer given to
/// `lb_set_event_callback()`.
///
/// Called on dlb's monitor thread (a thread the host program did not create), after the check
/// that caused the event (or on the thread setting it, for events queued before): it may call
/// dlb functions, except `lb_balancer_free()` on this balancer and `lb_set_event_callback()`.
/// It should return
/// quickly (the next check waits for it) and must not unwind.
pub type lb_event_callback =
    Option<unsafe extern "C" fn(event_json: *const c_char, user: *mut c_void)>;

/// Sends this balancer's host events to `cb` (with `user` passed through untouched) instead of
/// the queue; a NULL `cb` sends them to the queue again (`lb_next_event()`). The events already
/// queued (the `added` events of start-up, at least) go to the new callback first, on the
/// calling thread, before this returns.
///
/// Thread-safe. Does no I/O (it runs the new callback on queued events). A call to the
/// previous callback may still be running or about to start when this returns: release its
/// `user` data only after `lb_balancer_free()`. Must not be called from inside an event
/// callback.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (NULL `lb`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_set_event_callback(
    lb: *const lb_balancer,
    cb: lb_event_callback,
    user: *mut c_void,
) -> lb_status {
    ffi_boundary!("lb_set_event_callback", Result<(), Failure>, {
        // SAFETY: pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let user = user as usize;
        lb.set_event_callback(cb.map(|cb| -> crate::EventCallback {
            Box::new(move |e: &HostEvent| {
                let json = CString::new(e.to_json()).unwrap_or_default();
                // SAFETY: the callback and `user` are what the host registered, with the
                // contract of `lb_event_callback`; `json` outlives the call.
                unsafe { cb(json.as_ptr(), user as *mut c_void) };
            })
        }));
        Ok(())
    })
}

/// Takes the next host event from the balancer's queue (events go there while no callback is
/// set) and writes it as one JSON object into `buf` (output string rules: see the top of
/// dlb.h), e.g. `{"event":"quarantined","host_id":3,"addr":"db2:5432","role":"replica",
/// "health":"quarantined","reason":"lag","lag_bytes":1048576,"lag_seconds":12.5,"dropped":0}`.
///
/// `"event"` is one of `added` (a replica joined the list, at start-up too: a pool for it may
/// be opened), `removed` (it left the list and is being drained), `drained` (a pool for it may
/// be closed), `quarantined` (with `"reason"`, an `lb_quarantine_reason` name), `readmitted`,
/// `identity_changed` (the address now reaches another server, named in `"server"`). Other
/// fields: `"error"` (the last probe's), `"dropped"` (events dropped before this one because
/// the queue was full). New events and fields may be added: ignore the unknown.
///
/// Blocking: waits up to `timeout_ms` milliseconds (0: does not wait) for an event; with none,
/// returns `LB_OK` with an empty string (`*len` 0). `lb_wake_event_waiters()` ends every wait
/// at once. Poll with a short timeout (100 ms, say) from one thread, and stop that thread
/// (`lb_wake_event_waiters()`, then join it) before `lb_balancer_free()`.
///
/// On `LB_ERR_BUFFER_TOO_SMALL` the event stays first in the queue: retry with `*len + 1`
/// bytes.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_next_event(
    lb: *const lb_balancer,
    timeout_ms: u32,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_next_event", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        let timeout = std::time::Duration::from_millis(u64::from(timeout_ms));
        match lb.events().take(timeout, |e| out.put(&e.to_json()))? {
            Some(()) => Ok(()),
            None => out.put(""),
        }
    })
}

/// Ends every `lb_next_event()` waiting on this balancer now (they return no event). Never
/// blocks. Thread-safe.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (NULL `lb`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_wake_event_waiters(lb: *const lb_balancer) -> lb_status {
    ffi_boundary!("lb_wake_event_waiters", Result<(), Failure>, {
        // SAFETY: pointer arguments follow the module contract.
        unsafe { balancer(lb) }?.wake_event_waiters();
        Ok(())
    })
}
