//! Loopback source addresses to spread connections over: one address has
//! about 28,000 ephemeral ports toward one server port, so 100,000
//! connections need several (`127.0.0.1-127.0.0.8`).

use std::net::Ipv4Addr;

/// Parses `127.0.0.1-127.0.0.8`, a single address, or a count `N`
/// (meaning `127.0.0.1`..=`127.0.0.N`). Only loopback addresses.
pub fn parse(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let (first, last) = match spec.split_once('-') {
        Some((a, b)) => (addr(a)?, addr(b)?),
        None if !spec.contains('.') => {
            let n: u8 = spec.parse().map_err(|_| format!("{spec:?}: give N, an address, or A-B"))?;
            (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, n.max(1)))
        }
        None => {
            let a = addr(spec)?;
            (a, a)
        }
    };
    let (lo, hi) = (u32::from(first), u32::from(last));
    if hi < lo || hi - lo > 255 {
        return Err(format!("{spec:?}: the range must go up and hold at most 256 addresses"));
    }
    Ok((lo..=hi).map(Ipv4Addr::from).collect())
}

fn addr(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s.trim().parse().map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if !a.is_loopback() {
        return Err(format!("{a} is not a loopback address: load tests stay on 127.0.0.0/8"));
    }
    Ok(a)
}

/// Connections one source address can carry to one server port, with room
/// to spare below the ~28,000 ephemeral ports.
pub const PER_SOURCE: usize = 25_000;

/// Widens a single default address to as many as `connections` need
/// (127.0.0.1, .2, …), so a large run does not run out of ports.
pub fn enough(sources: Vec<Ipv4Addr>, connections: usize) -> Vec<Ipv4Addr> {
    let needed = connections.div_ceil(PER_SOURCE).clamp(1, 254);
    if sources.len() != 1 || needed == 1 {
        return sources;
    }
    let first = u32::from(sources[0]);
    (0..needed as u32).map(|k| Ipv4Addr::from(first + k)).filter(|a| a.is_loopback()).collect()
}

/// The source for connection `i`: round robin, so each address carries an
/// equal share.
pub fn pick(sources: &[Ipv4Addr], i: usize) -> Ipv4Addr {
    sources[i % sources.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_counts_and_refusals() {
        assert_eq!(parse("127.0.0.1-127.0.0.3").unwrap().len(), 3);
        assert_eq!(parse("8").unwrap().last(), Some(&Ipv4Addr::new(127, 0, 0, 8)));
        assert_eq!(parse("127.0.0.5").unwrap(), vec![Ipv4Addr::new(127, 0, 0, 5)]);
        assert!(parse("10.0.0.1").is_err(), "not loopback");
        assert!(parse("127.0.0.9-127.0.0.2").is_err(), "backwards");
        let s = parse("127.0.0.1-127.0.0.4").unwrap();
        let picks: Vec<u8> = (0..8).map(|i| pick(&s, i).octets()[3]).collect();
        assert_eq!(picks, vec![1, 2, 3, 4, 1, 2, 3, 4]);
        let one = parse("127.0.0.1").unwrap();
        assert_eq!(enough(one.clone(), 1000), one);
        assert_eq!(enough(one, 100_000).len(), 4, "100,000 connections need 4 addresses");
        assert_eq!(enough(s.clone(), 100_000), s, "an explicit range is kept");
    }
}
