use super::*;
use crate::{ChannelName, DeltaFormat, EncodedPublication, ErrorCode, JsonText, Latest, Member, Reply};

fn raw(text: &str) -> Data<'_> {
    Data(Cow::Borrowed(serde_json::from_str(text).unwrap()))
}

/// Encodes with the server's encoder and reads it back.
fn read(reply: Reply<'_>, want: ServerMessage<'_>) {
    let line = reply.encode();
    let line = std::str::from_utf8(&line).unwrap();
    let got = ServerMessage::decode(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(got, want, "{line}");
    assert_eq!(got.into_owned(), want, "owned the same");
}

fn text(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

#[test]
fn every_reply_reads_back() {
    read(
        Reply::Connected { id: 0, session: "s1", ping_interval_ms: 25_000, node: Some("n\"1") },
        ServerMessage::Connected { id: 0, session: text("s1"), ping_interval_ms: 25_000, node: Some(text("n\"1")) },
    );
    read(
        Reply::Connected { id: 0, session: "s1", ping_interval_ms: 5, node: None },
        ServerMessage::Connected { id: 0, session: text("s1"), ping_interval_ms: 5, node: None },
    );
    let newest = EncodedPublication::new(&ChannelName::new("c").unwrap(), Offset(7), "{\"n\":\n1e400}");
    read(
        Reply::Subscribed {
            id: 2,
            channel: "c",
            epoch: "e",
            offset: Offset(7),
            recovered: Some(false),
            latest: Some(Latest::of(&newest)),
            delta: Some(DeltaFormat::Fossil),
        },
        ServerMessage::Subscribed {
            id: 2,
            channel: text("c"),
            epoch: text("e"),
            offset: Offset(7),
            recovered: Some(false),
            latest: Some(Newest { offset: Offset(7), data: raw("{\"n\": 1e400}") }),
            delta: Some(DeltaFormat::Fossil),
        },
    );
    read(
        Reply::Subscribed {
            id: 3,
            channel: "c",
            epoch: "e",
            offset: Offset(0),
            recovered: None,
            latest: None,
            delta: None,
        },
        ServerMessage::Subscribed {
            id: 3,
            channel: text("c"),
            epoch: text("e"),
            offset: Offset(0),
            recovered: None,
            latest: None,
            delta: None,
        },
    );
    read(Reply::Unsubscribed { id: 4, channel: "c" }, ServerMessage::Unsubscribed { id: 4, channel: text("c") });
    for skipped in [None, Some(Skipped::Duplicate), Some(Skipped::NotNewer)] {
        read(
            Reply::Published { id: 5, channel: "c", epoch: "e", offset: Offset(9), skipped },
            ServerMessage::Published { id: 5, channel: text("c"), epoch: text("e"), offset: Offset(9), skipped },
        );
    }
    read(Reply::Refreshed { id: 6 }, ServerMessage::Refreshed { id: 6 });
    let member =
        Member { session: "s2", user: Some("42"), client: None, info: Some(JsonText("{\n \"role\": \"mod\"}")) };
    let joined =
        Subscriber { session: text("s2"), user: Some(text("42")), client: None, info: Some(raw(r#"{"role":"mod"}"#)) };
    read(Reply::Join { channel: "c", member }, ServerMessage::Join { channel: text("c"), member: joined });
    let member = Member { session: "s2", user: None, client: Some("web/1"), info: None };
    let left = Subscriber { session: text("s2"), user: None, client: Some(text("web/1")), info: None };
    read(Reply::Leave { channel: "c", member }, ServerMessage::Leave { channel: text("c"), member: left });
    read(Reply::Ping, ServerMessage::Ping);
    read(
        Reply::Error { id: Some(7), code: ErrorCode::NotConnected.as_str(), message: "say \"connect\"\nfirst" },
        ServerMessage::Error { id: Some(7), code: text("not_connected"), message: text("say \"connect\"\nfirst") },
    );
    read(
        Reply::Error { id: None, code: "bad_json", message: "m" },
        ServerMessage::Error { id: None, code: text("bad_json"), message: text("m") },
    );
    for reconnect_after_ms in [None, Some(250)] {
        read(
            Reply::Disconnect { code: 1001, reason: "restart", reconnect: true, reconnect_after_ms },
            ServerMessage::Disconnect { code: 1001, reason: text("restart"), reconnect: true, reconnect_after_ms },
        );
    }
}

#[test]
fn a_publication_reads_back_with_its_data_as_published() {
    let channel = ChannelName::new("chat:1").unwrap();
    let p = EncodedPublication::new(&channel, Offset(42), r#"{"text":"hi \"you\"","n":1e400}"#);
    let line = std::str::from_utf8(p.frame.text()).unwrap();
    let want = ServerMessage::Message { channel: text("chat:1"), offset: Offset(42), data: raw(p.data()), delta: None };
    let got = ServerMessage::decode(line).unwrap();
    assert_eq!(got, want);
    let ServerMessage::Message { data, channel: name, .. } = got else { unreachable!() };
    assert_eq!(data.get(), r#"{"text":"hi \"you\"","n":1e400}"#, "the exact text, numbers included");
    assert!(matches!(name, Cow::Borrowed(_)), "no copy of what needs no unescaping");
    let null = EncodedPublication::new(&channel, Offset(43), "null");
    let got = ServerMessage::decode(std::str::from_utf8(null.frame.text()).unwrap()).unwrap();
    assert_eq!(
        got,
        ServerMessage::Message { channel: text("chat:1"), offset: Offset(43), data: raw("null"), delta: None }
    );
    let whole = p.full_text_frame(&channel);
    let got = ServerMessage::decode(std::str::from_utf8(whole.text()).unwrap()).unwrap();
    let ServerMessage::Message { data, delta: Some(false), .. } = got else { panic!("{got:?}") };
    assert_eq!(serde_json::from_str::<String>(data.get()).unwrap(), p.data(), "the text as a string");
}

#[test]
fn what_this_version_does_not_know_is_told_apart_from_what_is_broken() {
    assert_eq!(
        ServerMessage::decode(r#"{"op":"hologram","channel":"c"}"#),
        Ok(ServerMessage::Unknown { op: text("hologram") })
    );
    let later = ServerMessage::decode(r#"{"op":"message","channel":"c","offset":1,"data":2,"delta":false}"#);
    assert!(matches!(later, Ok(ServerMessage::Message { .. })), "a field added later is ignored: {later:?}");
    for (line, says) in [
        ("{\"op\":\"message\",", "EOF"),
        ("[1]", "not a server message"),
        (r#"{"id":1}"#, "no `op`"),
        (r#"{"op":"message","channel":"c","offset":1}"#, "`message` without `data`"),
        (r#"{"op":"subscribed","id":1,"channel":"c","offset":1}"#, "without `epoch`"),
        (r#"{"op":"error","code":5,"message":"m"}"#, "without `code`"),
        (r#"{"op":"disconnect","code":"x","reason":"r","reconnect":true}"#, "without `code`"),
    ] {
        let e = ServerMessage::decode(line).unwrap_err();
        assert!(e.0.contains(says), "{line}: {e}");
    }
}

#[test]
fn answers_name_their_command() {
    assert_eq!(ServerMessage::decode(r#"{"op":"refreshed","id":3}"#).unwrap().id(), Some(3));
    assert_eq!(ServerMessage::decode(r#"{"op":"error","code":"c","message":"m"}"#).unwrap().id(), None);
    assert_eq!(ServerMessage::decode(r#"{"op":"ping"}"#).unwrap().id(), None);
}
