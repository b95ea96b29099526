//! Wire types. Only the fields the translators read are typed; everything
//! else is kept in each struct's flattened `rest` map so that a
//! deserialize → serialize round trip loses nothing.

pub mod anthropic;
pub mod openai;

use serde::{Deserialize, Deserializer};

/// Deserialize `null` (or a missing field, together with `#[serde(default)]`)
/// as `T::default()`.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
