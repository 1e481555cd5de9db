//! A loopback TCP proxy between a client and a server that a test can
//! cut, silence or make refuse WebSocket upgrades.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP proxy: `cut` drops every connection (and refuses new
/// ones while set); `mute` stops forwarding server → client but keeps TCP up.
#[derive(Clone, Default)]
pub struct Proxy {
    pub cut: Arc<AtomicBool>,
    pub mute: Arc<AtomicBool>,
    /// Drop WebSocket handshakes (a proxy or firewall that blocks them).
    pub block_upgrades: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(&self, upstream: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if me.cut.load(Ordering::SeqCst) {
                    continue; // dropped at once
                }
                if me.block_upgrades.load(Ordering::SeqCst) {
                    let mut head = [0u8; 1024];
                    let n = client.peek(&mut head).await.unwrap_or(0);
                    if String::from_utf8_lossy(&head[..n]).to_ascii_lowercase().contains("upgrade: websocket") {
                        continue;
                    }
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let me = me.clone();
                let generation = me.generation.load(Ordering::SeqCst);
                tokio::spawn(async move { me.pipe(client, server, generation).await });
            }
        });
        port
    }

    async fn pipe(&self, client: TcpStream, server: TcpStream, generation: u64) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let alive = |p: &Proxy| p.generation.load(Ordering::SeqCst) == generation;
        let up = async {
            let mut buf = [0u8; 8192];
            loop {
                match tokio::time::timeout(Duration::from_millis(50), cr.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => {
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {}
                }
                if !alive(self) {
                    return;
                }
            }
        };
        let down = async {
            let mut buf = [0u8; 8192];
            loop {
                match tokio::time::timeout(Duration::from_millis(50), sr.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => {
                        if !self.mute.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {}
                }
                if !alive(self) {
                    return;
                }
            }
        };
        tokio::select! { () = up => {}, () = down => {} }
    }

    /// Drops every open connection, like a network loss.
    pub fn drop_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}
