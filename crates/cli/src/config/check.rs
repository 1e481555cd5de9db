//! `holdfast config check` and `holdfast config sample`: every problem in
//! a file with its line, and a file with every key and its default.

use std::path::Path;

use super::FileConfig;

/// Every problem in a config file, each with its line. A syntax error
/// stops the reading; otherwise each key is checked on its own, so one
/// mistake does not hide the next.
pub fn check_file(path: &Path) -> Vec<String> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("cannot read {shown}: {e}")],
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return vec![format!("{shown}: {e}")],
    };
    let mut problems = Vec::new();
    for (key, value) in table {
        let line = line_of(&text, &key);
        let one = toml::Value::Table(toml::Table::from_iter([(key.clone(), value)]));
        if let Err(e) = one.try_into::<FileConfig>() {
            problems.push(format!("{shown}: line {line}: {key}: {}", e.message()));
        }
    }
    problems
}

/// The line (from 1) where a top-level key (or its `[key…]` table) starts.
fn line_of(text: &str, key: &str) -> usize {
    let starts = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
            || l.strip_prefix('[').and_then(|t| t.strip_prefix(key)).is_some_and(|r| r.starts_with(['.', ']']))
    };
    text.lines().position(starts).map_or(0, |i| i + 1)
}

/// The sample config (`deploy/holdfast.toml`): every key, with its default.
pub const SAMPLE: &str = include_str!("../../../../deploy/holdfast.toml");

#[cfg(test)]
mod tests {
    use super::super::FILE_KEYS;
    use super::*;
    use std::time::Duration;

    /// The sample names every key, and every value it shows is valid.
    #[test]
    fn the_sample_config_is_complete_and_valid() {
        for key in FILE_KEYS {
            assert!(SAMPLE.contains(&format!("# {key} = ")), "deploy/holdfast.toml lacks {key}");
        }
        let uncommented: String = SAMPLE
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{}\n", l.split("   #").next().unwrap()))
            .collect();
        let file: FileConfig = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(file.ping_interval, Some(Duration::from_secs(25)));
        assert!(file.namespaces.contains_key("chat"));
    }

    #[test]
    fn config_check_reports_every_problem_with_its_line() {
        let dir = std::env::temp_dir().join(format!("holdfast-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            "listen = \"nowhere\"\nping_interval = 25\npign_interval = \"5s\"\n[namespaces.x]\nprivate = 3\n",
        )
        .unwrap();
        let problems = check_file(&path);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for (line, key) in [(1, "listen"), (2, "ping_interval"), (3, "pign_interval"), (4, "namespaces")] {
            assert!(problems.iter().any(|p| p.contains(&format!("line {line}: {key}"))), "{key}: {problems:#?}");
        }
        std::fs::write(&path, "listen = \"127.0.0.1:8080\"\n").unwrap();
        assert!(check_file(&path).is_empty());
    }
}
