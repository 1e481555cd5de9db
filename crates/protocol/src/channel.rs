//! Channel names, validated once at the edge so the rest of the code can
//! trust them (and write them into JSON without escaping).

use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A validated channel name: 1 to [`MAX_CHANNEL_LEN`] bytes from
/// `A-Z a-z 0-9 _ - : . @ / = , ; ! ~ + *`.
///
/// Invariant: never needs JSON escaping, so encoders copy it verbatim.
/// Cheap to clone (shared `Arc<str>`), because every subscription and every
/// history entry refers to its channel.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a channel name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    /// The name has a character outside the allowed set.
    #[error("channel name has {0:?}; allowed are A-Z a-z 0-9 and _ - : . @ / = , ; ! ~ + *")]
    BadChar(char),
}

impl ChannelName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<ChannelName, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelNameError::TooLong(name.len()));
        }
        if let Some(c) = name.chars().find(|c| !allowed(*c)) {
            return Err(ChannelNameError::BadChar(c));
        }
        Ok(ChannelName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-:.@/=,;!~+*".contains(c)
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for n in ["chat", "chat:room1", "user@42", "a/b.c-d_e", "x=1,y;z!~+*"] {
            assert_eq!(ChannelName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(ChannelName::new(""), Err(ChannelNameError::Empty));
        assert_eq!(ChannelName::new(&"a".repeat(256)), Err(ChannelNameError::TooLong(256)));
        assert!(ChannelName::new(&"a".repeat(255)).is_ok());
        assert_eq!(ChannelName::new("a b"), Err(ChannelNameError::BadChar(' ')));
        assert_eq!(ChannelName::new("a\"b"), Err(ChannelNameError::BadChar('"')));
        assert_eq!(ChannelName::new("é"), Err(ChannelNameError::BadChar('é')));
    }
}
