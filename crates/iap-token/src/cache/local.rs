//! This thread's note of the tokens it was handed last, so that the next
//! request for the same audience reads neither the shared slot nor any
//! reference count another thread writes.
//!
//! An entry's `generation` changes whenever its current token does (a new
//! token stored, the token invalidated). A note records the generation it
//! was taken at, the token (this thread's copy, see
//! [`Slot`](super::Slot)) and until when it may be used without asking
//! the entry again: the earlier of the refresh and the usable deadlines.
//! A read checks the entry, the generation and the clock: three
//! comparisons, no lock, no allocation, no write but to this thread's own
//! counter of the token. Anything else (another generation, the refresh
//! window, no note) goes to the entry itself, which writes the note anew.
//!
//! A thread keeps at most [`NOTES`] notes, placed by the entry's address;
//! two entries that land on the same note take turns. A note holds a weak
//! reference to its entry (so an address cannot be reused while noted)
//! and a copy of the token: it goes when the note is overwritten or the
//! thread ends, not when the cache is dropped.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::Entry;
use crate::IdToken;

/// Notes per thread (a power of two).
const NOTES: usize = 4;

struct Note {
    entry: Weak<Entry>,
    generation: u64,
    /// Ask the entry again from here (ms since the epoch).
    until_ms: u64,
    token: IdToken,
}

thread_local! {
    static NOTED: RefCell<[Option<Note>; NOTES]> = const { RefCell::new([const { None }; NOTES]) };
}

/// Which note an entry uses: a few bits of its address, mixed.
#[inline]
fn place(entry: &Arc<Entry>) -> usize {
    let address = Arc::as_ptr(entry) as usize as u64;
    (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - NOTES.trailing_zeros())) as usize
}

/// `take` applied to the noted token of `entry`, if it is still the
/// current one and `now_ms` is before its note's deadline; else `take`
/// back. `take` sees the token in place: what it copies (the token, or
/// only its header value) is all a read costs.
#[inline(always)]
pub(super) fn get_with<T, F: FnOnce(&IdToken) -> T>(
    entry: &Arc<Entry>,
    now_ms: u64,
    take: F,
) -> Result<T, F> {
    let mut take = Some(take);
    let hit = NOTED
        .try_with(|notes| {
            let notes = notes.try_borrow().ok()?;
            let note = notes[place(entry)].as_ref()?;
            let current = Weak::as_ptr(&note.entry) == Arc::as_ptr(entry)
                && note.generation == entry.generation.load(Ordering::Acquire)
                && now_ms < note.until_ms;
            current.then(|| take.take().map(|take| take(&note.token)))?
        })
        .ok()
        .flatten();
    match (hit, take) {
        (Some(value), _) => Ok(value),
        (None, Some(take)) => Err(take),
        (None, None) => unreachable!("`take` runs only on a hit"),
    }
}

/// Notes `token` as `entry`'s current one at `generation` (read before the
/// token was), usable until `until_ms`.
pub(super) fn put(entry: &Arc<Entry>, generation: u64, until_ms: u64, token: &IdToken) {
    let _ = NOTED.try_with(|notes| {
        if let Ok(mut notes) = notes.try_borrow_mut() {
            notes[place(entry)] = Some(Note {
                entry: Arc::downgrade(entry),
                generation,
                until_ms,
                token: token.clone(),
            });
        }
    });
}
