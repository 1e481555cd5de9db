//! What a publish may ask besides its data, the same on the client's
//! `publish` and on `POST /api/publish`:
//! - `idempotency_key`: a publish that repeats a key already used on the
//!   channel within its history window (`history_ttl`) publishes nothing
//!   and is answered with the first one's position, so a backend may retry
//!   after a timeout without publishing twice;
//! - `version` (with an optional `version_epoch`): a publication is kept
//!   only when it is newer than the newest version the channel has seen in
//!   that version epoch, so state updates arriving out of order from
//!   several backends never replace a newer one with an older one. A new
//!   `version_epoch` starts the count again (the backend's store was reset).

use serde::{Deserialize, Serialize};

/// The longest idempotency key: enough for a UUID or a hash with a
/// prefix; it is stored per publish, so it is bounded.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// The longest version epoch.
pub const MAX_VERSION_EPOCH: usize = 64;

/// The options of one publish; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// The key a retry repeats.
    pub idempotency_key: Option<String>,
    /// The publication's version, with its epoch.
    pub version: Option<Version>,
}

/// A publication's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Larger is newer.
    pub number: u64,
    /// Versions compare only within one epoch ("" when none is given).
    pub epoch: String,
}

impl PublishOptions {
    /// The options from their wire fields, checked; `Err` names the field.
    pub fn new(
        idempotency_key: Option<String>,
        version: Option<u64>,
        version_epoch: Option<String>,
    ) -> Result<PublishOptions, String> {
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(format!("field `idempotency_key` must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"));
            }
        }
        if version_epoch.as_ref().is_some_and(|e| e.len() > MAX_VERSION_EPOCH) {
            return Err(format!("field `version_epoch` is at most {MAX_VERSION_EPOCH} bytes"));
        }
        let version = match (version, version_epoch) {
            (Some(number), epoch) => Some(Version { number, epoch: epoch.unwrap_or_default() }),
            (None, Some(_)) => return Err("field `version_epoch` needs `version`".into()),
            (None, None) => None,
        };
        Ok(PublishOptions { idempotency_key, version })
    }
}

/// Why a publish published nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// Its idempotency key was used within the window: the answer is the
    /// first publish's position.
    Duplicate,
    /// Its version is not newer than the channel's: the answer is the
    /// channel's newest position.
    NotNewer,
}

impl Skipped {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Duplicate => "duplicate",
            Skipped::NotNewer => "not_newer",
        }
    }

    /// From the wire name.
    pub fn parse(text: &str) -> Option<Skipped> {
        [Skipped::Duplicate, Skipped::NotNewer].into_iter().find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_field_by_field() {
        assert_eq!(PublishOptions::new(None, None, None), Ok(PublishOptions::default()));
        let o = PublishOptions::new(Some("k1".into()), Some(7), None).unwrap();
        assert_eq!(o.version, Some(Version { number: 7, epoch: String::new() }));
        let e = PublishOptions::new(Some(String::new()), None, None).unwrap_err();
        assert!(e.contains("idempotency_key"), "{e}");
        assert!(PublishOptions::new(Some("k".repeat(MAX_IDEMPOTENCY_KEY)), None, None).is_ok());
        assert!(PublishOptions::new(Some("k".repeat(MAX_IDEMPOTENCY_KEY + 1)), None, None).is_err());
        let e = PublishOptions::new(None, None, Some("e".into())).unwrap_err();
        assert!(e.contains("needs `version`"), "{e}");
        assert!(PublishOptions::new(None, Some(1), Some("e".repeat(MAX_VERSION_EPOCH + 1))).is_err());
    }

    #[test]
    fn skipped_reads_back_what_it_writes() {
        for s in [Skipped::Duplicate, Skipped::NotNewer] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
            assert_eq!(Skipped::parse(s.as_str()), Some(s));
        }
        assert_eq!(Skipped::parse("other"), None);
    }
}
