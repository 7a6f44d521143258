//! A TCP proxy in front of PostgreSQL that a test can sever and restore, to simulate an
//! outage of the database alone.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A TCP proxy in front of PostgreSQL that a test can sever to simulate an outage.
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
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
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
