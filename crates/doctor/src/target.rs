//! The URL stage: what a browser would accept as a WebSocket URL.

/// A parsed WebSocket URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `wss://` (or `https://`).
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// Set when the scheme was http(s) and was taken as ws(s).
    pub warning: Option<String>,
}

impl Target {
    /// `Host` header value: the port only when it is not the default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The same-origin `Origin` a page on this host would send.
    pub fn own_origin(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.host_header())
    }

    /// The URL as a browser would open it.
    pub fn url(&self) -> String {
        format!("{}://{}{}", if self.tls { "wss" } else { "ws" }, self.host_header(), self.path)
    }
}

/// Parses `url` as browsers do for `new WebSocket(url)`.
pub fn parse(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} has no scheme; use ws:// or wss://"))?;
    let (tls, warning) = match scheme.to_ascii_lowercase().as_str() {
        "ws" => (false, None),
        "wss" => (true, None),
        "http" => {
            (false, Some("http:// taken as ws:// (browsers accept it since 2023; older clients do not)".to_string()))
        }
        "https" => {
            (true, Some("https:// taken as wss:// (browsers accept it since 2023; older clients do not)".to_string()))
        }
        other => return Err(format!("scheme {other}:// is not a WebSocket scheme; use ws:// or wss://")),
    };
    if rest.contains('#') {
        return Err("WebSocket URLs cannot have a #fragment".into());
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err("credentials in the URL (user@host) are not sent by browsers; use a token".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in an IPv6 address")?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?,
        None if tls => 443,
        None => 80,
    };
    if port == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok(Target { tls, host, port, path, warning })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_browsers_accept() {
        let t = parse("ws://127.0.0.1:8080/ws?x=1").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (false, "127.0.0.1", 8080, "/ws?x=1"));
        let t = parse("wss://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.host_header()), (443, "/", "example.com".to_string()));
        let t = parse("https://example.com:8443/live").unwrap();
        assert!(t.tls && t.warning.is_some());
        assert_eq!(t.url(), "wss://example.com:8443/live");
        let t = parse("ws://[::1]:9000/ws").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.host_header()), ("::1", 9000, "[::1]:9000".to_string()));
        assert_eq!(t.own_origin(), "http://[::1]:9000");
    }

    #[test]
    fn refuses_what_browsers_refuse() {
        for bad in ["ftp://x/", "example.com/ws", "ws://", "ws://h:99999/", "ws://h/#frag", "ws://u:p@h/"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
