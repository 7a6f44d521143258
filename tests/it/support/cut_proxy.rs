//! A TCP proxy in front of PostgreSQL or Redis that a test can sever and restore, to simulate
//! an outage of one service alone, or slow down, to hold one broker's calls in flight while
//! another acts (a fault between two steps).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A TCP proxy that a test can sever to simulate an outage.
pub struct CutProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

struct ProxyState {
    up: bool,
    conns: Vec<tokio::task::JoinHandle<()>>,
}

impl CutProxy {
    /// Forwards a local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_slow(upstream, std::time::Duration::ZERO).await
    }

    /// Forwards a local port to `upstream`, delivering what the client sends `delay` late (in
    /// order, each byte delayed by the same amount; answers flow back at once).
    pub async fn start_slow(upstream: SocketAddr, delay: std::time::Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            conns: Vec::new(),
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut guard = st.lock().await;
                if !guard.up {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if delay.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    } else {
                        forward_late(inbound, out, delay).await;
                    }
                });
                guard.conns.push(task);
            }
        });
        Self { addr, state }
    }

    /// Drops every connection and refuses new ones.
    pub async fn cut(&self) {
        let mut g = self.state.lock().await;
        g.up = false;
        for c in g.conns.drain(..) {
            c.abort();
        }
    }

    /// Accepts connections again.
    pub async fn restore(&self) {
        self.state.lock().await.up = true;
    }
}

/// Client to server `delay` late, server to client at once.
async fn forward_late(inbound: TcpStream, out: TcpStream, delay: std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = out.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from_client.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to_server.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    reader.abort();
    writer.abort();
}
