//! Label values, interned once: a series is keyed by small integers, so recording a request hashes a
//! few `u32`s and allocates nothing once its label values have been seen.
//!
//! The table is process-wide and append-only (a value never changes its id). Each thread keeps a cache
//! of the ids it has looked up, so the shared table is consulted only the first time a thread meets a
//! value (under a read lock: threads do not exclude each other; only adding a value takes the write
//! lock). Model names — which clients choose — are capped: past `max_models` distinct names every new
//! one is [`OVERFLOW`], and names longer than [`MAX_MODEL_BYTES`] are always. Overflowing names are not
//! cached, so made-up names cannot grow the caches either.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// An interned label value.
pub type Label = u32;

/// The empty value (Prometheus reads an empty label as an absent one).
pub const EMPTY: Label = 0;
/// The value that stands for every model past the cap, and for models no route matched.
pub const OVERFLOW: Label = 1;
/// Its text: the OpenTelemetry conventions' "other" value.
pub const OVERFLOW_TEXT: &str = "_OTHER";

/// Model names longer than this are never labels of their own.
pub const MAX_MODEL_BYTES: usize = 200;

/// Default for `metrics.max_models`.
pub const DEFAULT_MAX_MODELS: usize = 200;

/// A small, fast hash for short keys (FxHash's mixing step): the keys are our own ids and names, so
/// resistance to chosen collisions is not needed where it is used.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = BuildHasherDefault<Fx>;

struct Table {
    ids: HashMap<Box<str>, Label, FxBuild>,
    values: Vec<Arc<str>>,
    /// Values added through [`model`].
    models: usize,
}

static TABLE: RwLock<Option<Table>> = RwLock::new(None);
static MAX_MODELS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_MODELS);
/// Set once the model cap is reached: later unknown names go straight to [`OVERFLOW`], unlocked.
static MODELS_FULL: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CACHE: RefCell<HashMap<Box<str>, Label, FxBuild>> = RefCell::new(HashMap::default());
}

/// Looks `value` up in the shared table (read lock).
fn find(value: &str) -> Option<Label> {
    TABLE.read().as_ref().and_then(|t| t.ids.get(value).copied())
}

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut guard = TABLE.write();
    let table = guard.get_or_insert_with(|| {
        let mut t = Table { ids: HashMap::default(), values: Vec::new(), models: 0 };
        for v in ["", OVERFLOW_TEXT] {
            t.ids.insert(v.into(), t.values.len() as Label);
            t.values.push(v.into());
        }
        t
    });
    f(table)
}

fn cached(value: &str) -> Option<Label> {
    CACHE.try_with(|c| c.borrow().get(value).copied()).ok().flatten()
}

fn remember(value: &str, id: Label) {
    let _ = CACHE.try_with(|c| c.borrow_mut().insert(value.into(), id));
}

/// The id of a value whose set is bounded by the config (client, backend, route and limit names) or by
/// the code (operations, providers, error types).
pub fn label(value: &str) -> Label {
    if value.is_empty() {
        return EMPTY;
    }
    if let Some(id) = cached(value) {
        return id;
    }
    let id = find(value).unwrap_or_else(|| {
        with_table(|t| match t.ids.get(value) {
            Some(id) => *id,
            None => {
                let id = t.values.len() as Label;
                t.ids.insert(value.into(), id);
                t.values.push(value.into());
                id
            }
        })
    });
    remember(value, id);
    id
}

/// The id of a model name, within the cap ([`OVERFLOW`] past it).
pub fn model(value: &str) -> Label {
    if value.is_empty() {
        return EMPTY;
    }
    if value.len() > MAX_MODEL_BYTES {
        return OVERFLOW;
    }
    if let Some(id) = cached(value) {
        return id;
    }
    if let Some(id) = find(value) {
        remember(value, id);
        return id;
    }
    if MODELS_FULL.load(Ordering::Relaxed) {
        return OVERFLOW;
    }
    let id = with_table(|t| match t.ids.get(value) {
        Some(id) => Some(*id),
        None if t.models < MAX_MODELS.load(Ordering::Relaxed) => {
            let id = t.values.len() as Label;
            t.ids.insert(value.into(), id);
            t.values.push(value.into());
            t.models += 1;
            Some(id)
        }
        None => {
            MODELS_FULL.store(true, Ordering::Relaxed);
            None
        }
    });
    match id {
        Some(id) => {
            remember(value, id);
            id
        }
        None => OVERFLOW,
    }
}

/// Sets the cap on distinct model names (from `metrics.max_models`). Names already interned stay.
pub fn set_max_models(max: usize) {
    MAX_MODELS.store(max, Ordering::Relaxed);
    let full = with_table(|t| t.models >= max);
    MODELS_FULL.store(full, Ordering::Relaxed);
}

/// Every value by id, for rendering.
pub fn values() -> Vec<Arc<str>> {
    if TABLE.read().is_none() {
        with_table(|_| ());
    }
    TABLE.read().as_ref().map(|t| t.values.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_models_overflow_past_the_cap() {
        assert_eq!(label(""), EMPTY);
        let a = label("labels-test-client");
        assert_eq!(label("labels-test-client"), a);
        assert_ne!(label("labels-test-other"), a);
        assert_eq!(model(&"m".repeat(MAX_MODEL_BYTES + 1)), OVERFLOW);
        let values = values();
        assert_eq!(&*values[a as usize], "labels-test-client");
        assert_eq!(&*values[OVERFLOW as usize], OVERFLOW_TEXT);
    }

    #[test]
    fn fx_hashes_bytes_and_words_deterministically() {
        let h = |s: &str| {
            let mut f = Fx::default();
            f.write(s.as_bytes());
            f.finish()
        };
        assert_eq!(h("gpt-4o"), h("gpt-4o"));
        assert_ne!(h("gpt-4o"), h("gpt-4o-mini"));
        assert_ne!(h("a"), h("b"));
    }
}
