//! Tests of the configuration: flags, env, the file and their order.

use super::*;
use clap::CommandFactory;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn every_flag_has_a_file_key_and_an_env_twin() {
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "config" || id == "help" {
            continue;
        }
        assert!(FILE_KEYS.contains(&id), "flag --{id} has no config-file key");
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        assert_eq!(env, Some(format!("HOLDFAST_{}", id.to_uppercase())), "flag --{id}");
    }
}

/// PROTOCOL.md's configuration table is the full list users read.
#[test]
fn every_flag_is_in_the_documented_table() {
    let doc = include_str!("../../../../docs/PROTOCOL.md");
    for arg in Cli::command().get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" {
            continue;
        }
        let flag = format!("| `--{}", id.replace('_', "-"));
        assert!(doc.contains(&flag), "docs/PROTOCOL.md's configuration table lacks --{id}");
    }
}

#[test]
fn a_duration_without_a_unit_says_how_to_write_one() {
    let e = toml::from_str::<FileConfig>("ping_interval = 25\n").err().unwrap().to_string();
    assert!(e.contains("25 has no unit") && e.contains("\"25s\""), "{e}");
    let file: FileConfig = toml::from_str("ping_interval = \"25s\"\n").unwrap();
    assert_eq!(file.ping_interval, Some(Duration::from_secs(25)));
}

#[test]
fn file_errors_name_the_line_and_key() {
    let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:9000\"\npign_interval = \"5s\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("pign_interval"), "{text}");
    let err = toml::from_str::<FileConfig>("ping_interval = \"soon\"\n").unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("25s"), "{err}");
    let ok: FileConfig = toml::from_str("ping_interval = \"5s\"\nhistory_size = 10\n").unwrap();
    assert_eq!(ok.ping_interval, Some(Duration::from_secs(5)));
}

#[test]
fn namespaces_take_unset_rules_from_the_server() {
    let dir = std::env::temp_dir().join(format!("holdfast-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("holdfast.toml");
    std::fs::write(
        &path,
        "history_size = 30\njwt_secret = \"s\"\n[namespaces.admin]\nallow_publish = false\nprivate = true\nhistory_ttl = \"1m\"\n",
    )
    .unwrap();
    let r = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap();
    let admin = r.namespaces.rules(&holdfast_protocol::ChannelName::new("admin:audit").unwrap());
    assert!(!admin.allow_publish && admin.private && admin.presence);
    assert!(!admin.join_leave, "join and leave are off unless a namespace asks");
    assert_eq!((admin.history.max_len, admin.history.max_age), (30, Duration::from_secs(60)));
    std::fs::write(&path, "[namespaces.admin]\nprivate = true\n").unwrap();
    let err = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().err().unwrap();
    assert!(err.to_string().contains("JWT key"), "{err}");
    std::fs::write(&path, "[namespaces.room]\njoin_leave = true\n").unwrap();
    let r = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap();
    assert!(r.namespaces.rules(&holdfast_protocol::ChannelName::new("room:1").unwrap()).join_leave);
    assert!(!r.namespaces.rules(&holdfast_protocol::ChannelName::new("other:1").unwrap()).join_leave);
    std::fs::write(&path, "[namespaces.doc]\ndelta = \"fossil\"\n").unwrap();
    let r = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap();
    let doc = holdfast_protocol::ChannelName::new("doc:1").unwrap();
    assert_eq!(r.namespaces.rules(&doc).delta, Some(holdfast_protocol::DeltaFormat::Fossil));
    std::fs::write(&path, "[namespaces.doc]\ndelta = \"vcdiff\"\n").unwrap();
    let err = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().err().unwrap();
    assert!(format!("{err:#}").contains("fossil"), "an unknown format names the one there is: {err:#}");
    std::fs::write(&path, "[namespaces.admin]\nprivat = true\n").unwrap();
    let err = ServeArgs { config: Some(path), ..Default::default() }.resolve().err().unwrap();
    assert!(format!("{err:#}").contains("privat"), "{err:#}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("holdfast.toml");
    std::fs::write(&path, "history_size = 7\nping_interval = \"3s\"\napi_key = \"from-file\"\n").unwrap();
    let args = ServeArgs { config: Some(path), history_size: Some(9), ..Default::default() };
    let r = args.resolve().unwrap();
    let plain = holdfast_protocol::ChannelName::new("plain").unwrap();
    assert_eq!(r.namespaces.rules(&plain).history.max_len, 9);
    assert_eq!(r.session.ping_interval, Duration::from_secs(3));
    assert_eq!(r.api_key, ("from-file".to_string(), false));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_api_key_from_a_mounted_secret_loses_its_newline() {
    let args = ServeArgs { api_key: Some("s3cret\n".into()), ..Default::default() };
    assert_eq!(args.resolve().unwrap().api_key, ("s3cret".to_string(), false));
}
