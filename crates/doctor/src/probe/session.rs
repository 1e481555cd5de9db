//! The probe after the `101`: the `connect` round trip, ping, the idle
//! wait and the close, each a stage.

use super::*;
use holdfast_protocol::{Command, Request, ServerMessage};

type Ws = WebSocketStream<Box<dyn Io>>;

/// What came in while waiting.
enum Incoming {
    Msg(Message),
    Ended(End),
    Quiet,
}

async fn next(ws: &mut Ws, wait: Duration, opened: Instant) -> Incoming {
    match timeout(wait, ws.next()).await {
        Err(_) => Incoming::Quiet,
        Ok(Some(Ok(Message::Close(frame)))) => Incoming::Ended(End::Closed {
            code: frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005),
            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            after: opened.elapsed(),
        }),
        Ok(Some(Ok(m))) => Incoming::Msg(m),
        Ok(Some(Err(_))) | Ok(None) => Incoming::Ended(End::Dropped { after: opened.elapsed() }),
    }
}

/// A holdfast server's answer to the probe's `connect` (id 1): `connected`,
/// or an `error` refusing the session.
fn holdfast_answer(text: &str) -> Option<RoundTrip> {
    text.split('\n').find_map(|line| match ServerMessage::decode(line).ok()? {
        ServerMessage::Connected { session, ping_interval_ms, .. } => {
            Some(RoundTrip::Holdfast { session: session.into_owned(), ping_interval_ms })
        }
        ServerMessage::Error { id: Some(1), code, message } => {
            Some(RoundTrip::Refused { code: code.into_owned(), message: message.chars().take(200).collect() })
        }
        _ => None,
    })
}

/// Answers a holdfast protocol ping, as every holdfast client does.
async fn answer_protocol_ping(ws: &mut Ws, m: &Message) -> bool {
    if let Message::Text(t) = m {
        if t.split('\n').any(|l| matches!(ServerMessage::decode(l), Ok(ServerMessage::Ping))) {
            let _ = ws.send(Message::text(Request::pong().encode())).await;
            return true;
        }
    }
    false
}

pub(super) async fn session(run: &mut Run<'_>, ws: &mut Ws, opened: Instant) {
    // Round trip: one message that a holdfast server answers with
    // `connected` and an echo server returns unchanged.
    let t = Instant::now();
    // The token goes in `connect`, where holdfast's clients send it (it
    // also went in the upgrade's Authorization header, for other servers).
    let client = Some("holdfast-doctor".to_string());
    let connect = Command::Connect { token: run.args.token.clone(), client, ping_interval_ms: None, report: None };
    let probe = Request { id: Some(1), command: connect }.encode();
    let wait = run.args.timeout.min(Duration::from_secs(3));
    if ws.send(Message::text(probe.as_str())).await.is_err() {
        run.o.end = Some(End::Dropped { after: opened.elapsed() });
    }
    let mut round_trip = RoundTrip::NoReply;
    while run.o.end.is_none() && t.elapsed() < wait {
        match next(ws, wait.saturating_sub(t.elapsed()), opened).await {
            Incoming::Msg(m) if answer_protocol_ping(ws, &m).await => continue,
            Incoming::Msg(Message::Text(text)) => {
                round_trip = if text.as_str() == probe {
                    RoundTrip::Echo
                } else {
                    holdfast_answer(&text).unwrap_or_else(|| RoundTrip::OtherReply(text.chars().take(120).collect()))
                };
                break;
            }
            Incoming::Msg(Message::Binary(b)) => {
                round_trip = RoundTrip::OtherReply(format!("{} binary bytes", b.len()));
                break;
            }
            Incoming::Msg(_) => continue,
            Incoming::Ended(end) => run.o.end = Some(end),
            Incoming::Quiet => break,
        }
    }
    let (status, detail) = match (&round_trip, &run.o.end) {
        (_, Some(_)) => (Status::Failed, "the connection ended during the round trip".to_string()),
        (RoundTrip::Holdfast { session, ping_interval_ms }, _) => (
            Status::Ok,
            format!(
                "holdfast protocol: connected, session {}…, server pings every {} ms",
                &session[..session.len().min(8)],
                ping_interval_ms
            ),
        ),
        (RoundTrip::Refused { code, message }, _) => {
            (Status::Failed, format!("holdfast protocol: connect refused: {code}: {message}"))
        }
        (RoundTrip::Echo, _) => (Status::Ok, "the server echoed the message".into()),
        (RoundTrip::OtherReply(r), _) => (Status::Ok, format!("the server answered: {r}")),
        (RoundTrip::NoReply, _) => (Status::Ok, format!("no reply within {wait:?} (fine for push-only endpoints)")),
    };
    run.stage("round_trip", status, t, detail);
    run.o.round_trip = Some(round_trip);
    if run.o.end.is_some() {
        return close_stage(run, ws).await;
    }

    // Ping/pong.
    let t = Instant::now();
    let payload = b"holdfast-doctor".to_vec();
    let mut rtt = Err(format!("no pong within {wait:?}"));
    if ws.send(Message::Ping(payload.clone().into())).await.is_ok() {
        while t.elapsed() < wait {
            match next(ws, wait.saturating_sub(t.elapsed()), opened).await {
                Incoming::Msg(Message::Pong(p)) if p.as_ref() == payload.as_slice() => {
                    rtt = Ok(t.elapsed());
                    break;
                }
                Incoming::Msg(m) => {
                    answer_protocol_ping(ws, &m).await;
                }
                Incoming::Ended(end) => {
                    run.o.end = Some(end);
                    break;
                }
                Incoming::Quiet => break,
            }
        }
    }
    match &rtt {
        Ok(d) => run.stage("ping", Status::Ok, t, format!("pong in {:.1} ms", d.as_secs_f64() * 1000.0)),
        Err(e) => run.stage("ping", Status::Warn, t, e.clone()),
    }
    run.o.ping_rtt = Some(rtt);

    // Idle survival.
    match run.args.idle {
        Some(idle) if run.o.end.is_none() => {
            let t = Instant::now();
            run.o.idle_requested = Some(idle);
            eprintln_progress(run.args, &format!("staying idle for {} s to find idle timeouts…", idle.as_secs()));
            // A line every 15 s, so a long wait does not look like a hang.
            let mut note_at = IDLE_PROGRESS_EVERY;
            while t.elapsed() < idle {
                match next(ws, idle.min(note_at).saturating_sub(t.elapsed()), opened).await {
                    Incoming::Msg(m) => {
                        answer_protocol_ping(ws, &m).await;
                    }
                    Incoming::Ended(end) => {
                        run.o.end = Some(end);
                        break;
                    }
                    Incoming::Quiet if t.elapsed() >= note_at && t.elapsed() < idle => {
                        let note = format!("{} s of {} s, still open", whole_seconds(t.elapsed()), idle.as_secs());
                        eprintln_progress(run.args, &note);
                        note_at += IDLE_PROGRESS_EVERY;
                    }
                    Incoming::Quiet => {}
                }
            }
            let detail = match &run.o.end {
                None => format!("survived {} s without client traffic", idle.as_secs()),
                Some(End::Dropped { after }) => {
                    format!("dropped without a close frame after {} s", whole_seconds(*after))
                }
                Some(End::Closed { code, after, .. }) => {
                    format!("closed with code {code} after {} s", whole_seconds(*after))
                }
            };
            let status = if run.o.end.is_none() { Status::Ok } else { Status::Failed };
            run.stage("idle", status, t, detail);
        }
        Some(_) => run.skip("idle", "the connection had already ended"),
        None => run.skip("idle", "use --idle 75s to find proxy idle timeouts"),
    }
    close_stage(run, ws).await
}

async fn close_stage(run: &mut Run<'_>, ws: &mut Ws) {
    let t = Instant::now();
    if let Some(end) = run.o.end.clone() {
        let detail = match end {
            End::Closed { code, reason, .. } => {
                format!("the server closed with {code}{}: {}", reason_suffix(&reason), meaning(code))
            }
            End::Dropped { .. } => "the connection dropped without a close frame (1006)".into(),
        };
        run.stage("close", Status::Failed, t, detail);
        return;
    }
    let frame = CloseFrame { code: WsCode::Normal, reason: "holdfast doctor done".into() };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let mut reply = None;
    while let Ok(Some(msg)) = timeout(Duration::from_secs(2), ws.next()).await {
        match msg {
            Ok(Message::Close(f)) => {
                reply = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    run.o.close_reply = reply;
    match reply {
        Some(code) => {
            run.stage("close", Status::Ok, t, format!("clean close: the server answered {code}: {}", meaning(code)))
        }
        None => run.stage("close", Status::Warn, t, "the server did not answer the close frame within 2 s"),
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason:?})")
    }
}

/// A close code's meaning from the table, or its range.
pub fn meaning(code: u16) -> String {
    match holdfast_protocol::CloseCode::from_code(code) {
        Some(c) => format!("{} — {}", c.name(), c.meaning()),
        None => match code {
            1005 => "no status code in the close frame".into(),
            1006 => "abnormal closure: no close frame".into(),
            1012 => "service restart".into(),
            3000..=3999 => "a library or framework code".into(),
            4000..=4499 => "an application code (holdfast: reconnect)".into(),
            4500..=4999 => "an application code (holdfast: do not reconnect)".into(),
            _ => "a code outside the ones holdfast knows".into(),
        },
    }
}

/// How often a long `--idle` wait says it is still waiting.
const IDLE_PROGRESS_EVERY: Duration = Duration::from_secs(15);

fn eprintln_progress(args: &DoctorArgs, text: &str) {
    if !args.json {
        eprintln!("  … {text}");
    }
}
