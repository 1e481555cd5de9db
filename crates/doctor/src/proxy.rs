//! Which forward proxy the doctor goes through: the one the user's
//! environment names, as curl chooses it, so the doctor takes the way
//! the user's own tools (curl, Python, a browser configured alike) take.
//!
//! - `wss://` uses `https_proxy` (or `HTTPS_PROXY`), `ws://` `http_proxy`
//!   (or `HTTP_PROXY`); either falls back to `all_proxy` (`ALL_PROXY`).
//! - `no_proxy` (`NO_PROXY`) lists hosts that go direct: `*` for all, a
//!   name for itself and its subdomains (`example.com`, `.example.com`), an
//!   IP address for itself. Nothing else is exempt, not even `localhost`:
//!   a proxy that refuses it is what the user's tools meet too.
//! - `--proxy URL` overrides the environment, `--no-proxy` ignores it.
//!
//! Through a proxy the doctor opens a tunnel with `CONNECT host:port`
//! (what browsers do for `ws://` and `wss://` alike) and runs every later
//! stage inside it.

use crate::target::Target;

/// A forward proxy to tunnel through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy as configured, password hidden (for the report).
    pub shown: String,
    pub host: String,
    pub port: u16,
    /// `user:password`, for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
    /// Where the setting came from (`https_proxy`, `--proxy`…).
    pub source: String,
}

/// The proxy for `target`, from `--proxy`/`--no-proxy` and the environment
/// (`env` looks a variable up); `Err` when the setting cannot be used.
pub fn choose(
    target: &Target,
    flag: Option<&str>,
    no_proxy_flag: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, String> {
    if no_proxy_flag {
        return Ok(None);
    }
    if let Some(url) = flag {
        return parse(url, "--proxy").map(Some);
    }
    let names: &[&str] = if target.tls { &["https_proxy", "HTTPS_PROXY"] } else { &["http_proxy", "HTTP_PROXY"] };
    let found = names
        .iter()
        .chain(&["all_proxy", "ALL_PROXY"])
        .find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (*name, v)));
    let Some((name, url)) = found else {
        return Ok(None);
    };
    let exempt = env("no_proxy").or_else(|| env("NO_PROXY")).unwrap_or_default();
    if exempted(&target.host, &exempt) {
        return Ok(None);
    }
    parse(&url, name).map(Some)
}

/// Whether `no_proxy` sends `host` direct.
fn exempted(host: &str, no_proxy: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy.split(',').map(|e| e.trim().trim_end_matches('.').to_ascii_lowercase()).any(|entry| {
        if entry == "*" {
            return true;
        }
        // A port in the entry (`example.com:8080`) is not compared.
        let entry = match entry.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h.to_string(),
            _ => entry,
        };
        let name = entry.trim_start_matches('.');
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

/// `http://[user:pass@]host[:port]` (port 1080 when absent, as curl).
fn parse(url: &str, source: &str) -> Result<Proxy, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!("{source}={url}: the doctor speaks to http:// proxies only, not {scheme}://"))
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| format!("{source}={url}: {p:?} is not a port"))?)
        }
        _ => (hostport, 1080),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("{source}={url}: no proxy host"));
    }
    let shown = match &credentials {
        Some(c) => format!("http://{}:***@{hostport}", c.split(':').next().unwrap_or_default()),
        None => format!("http://{hostport}"),
    };
    Ok(Proxy { shown, host, port, credentials, source: source.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        crate::target::parse(url).unwrap()
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn picks_the_variable_curl_would() {
        let vars = env(&[("https_proxy", "http://sq:3128"), ("http_proxy", "http://plain:8080")]);
        let p = choose(&target("wss://example.com/ws"), None, false, &vars).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port, p.source.as_str()), ("sq", 3128, "https_proxy"));
        let p = choose(&target("ws://example.com/ws"), None, false, &vars).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("plain", 8080));
        let upper = env(&[("HTTPS_PROXY", "http://up:1")]);
        assert_eq!(choose(&target("wss://x/ws"), None, false, &upper).unwrap().unwrap().host, "up");
        let all = env(&[("ALL_PROXY", "corp")]);
        let p = choose(&target("ws://x/ws"), None, false, &all).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("corp", 1080), "port 1080 when none is given");
        assert_eq!(choose(&target("ws://x/ws"), None, false, env(&[])).unwrap(), None);
    }

    #[test]
    fn no_proxy_and_the_flags() {
        let vars = env(&[("https_proxy", "http://sq:3128"), ("no_proxy", "internal.example, .corp, 10.0.0.7:443")]);
        let via = |url: &str| choose(&target(url), None, false, &vars).unwrap().map(|p| p.host);
        assert_eq!(via("wss://internal.example/ws"), None);
        assert_eq!(via("wss://a.internal.example/ws"), None, "subdomains too");
        assert_eq!(via("wss://x.corp/ws"), None);
        assert_eq!(via("wss://10.0.0.7/ws"), None);
        assert_eq!(via("wss://notinternal.example/ws"), Some("sq".into()), "not a suffix match without a dot");
        assert_eq!(via("wss://localhost/ws"), Some("sq".into()), "no implicit exemption");
        let star = env(&[("https_proxy", "http://sq:3128"), ("NO_PROXY", "*")]);
        assert_eq!(choose(&target("wss://x/ws"), None, false, &star).unwrap(), None);
        assert_eq!(choose(&target("wss://x/ws"), None, true, &vars).unwrap(), None, "--no-proxy");
        let p = choose(&target("wss://internal.example/ws"), Some("http://u:secret@flag:9"), false, &vars).unwrap();
        let p = p.unwrap();
        assert_eq!((p.host.as_str(), p.credentials.as_deref()), ("flag", Some("u:secret")), "--proxy wins");
        assert!(!p.shown.contains("secret"), "{}", p.shown);
        assert!(choose(&target("wss://x/ws"), Some("socks5://s:1"), false, &vars).unwrap_err().contains("http://"));
    }
}
