//! A model's stable ID (`eden_smollm2_135m_a3f2c1`), as a type of its own so that it is never
//! mixed up with a name a request gave, a task name or a file name.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A catalog ID. Cheap to clone (shared text); compares, hashes and serializes as its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelId(Arc<str>);

impl ModelId {
    pub fn new(id: &str) -> ModelId {
        ModelId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Reads as its text (`starts_with`, `rsplit_once`, `&str` arguments); it is built only from
/// text, so nothing is lost.
impl std::ops::Deref for ModelId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ModelId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ModelId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ModelId {
    fn from(id: &str) -> ModelId {
        ModelId::new(id)
    }
}

impl From<String> for ModelId {
    fn from(id: String) -> ModelId {
        ModelId(Arc::from(id))
    }
}

impl PartialEq<str> for ModelId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ModelId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// A custom ID (`add --id`, a config alias or task name): 1-128 characters of
/// `[A-Za-z0-9._:-]`.
pub fn valid_custom_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_its_text() {
        let id = ModelId::from("eden_smollm2_135m_a3f2c1");
        assert_eq!(id, "eden_smollm2_135m_a3f2c1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"eden_smollm2_135m_a3f2c1\"");
        let back: ModelId = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.as_str(), "x");
        let mut m = std::collections::HashMap::new();
        m.insert(id.clone(), 1);
        assert_eq!(m.get("eden_smollm2_135m_a3f2c1"), Some(&1));
        assert_eq!(format!("{id} {id:?}"), "eden_smollm2_135m_a3f2c1 \"eden_smollm2_135m_a3f2c1\"");
    }
}
