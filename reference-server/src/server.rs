//! Binding, serving in a task, and stopping.

use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use mock_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::routes::router_with_cut_off;

/// How long `shutdown` lets open responses finish before cutting them off
/// (a stalled stream would otherwise hold the server forever).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A server serving in a background task.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let server = reference_server::spawn(Default::default(), Default::default()).await?;
/// println!("{}/health", server.base_url());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    cut_off: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// Binds `config.host:config.port` and serves `engine` until shut down.
pub async fn spawn(config: Config, engine: Engine) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind((config.host, config.port)).await?;
    let local_addr = listener.local_addr()?;
    let cut_off = CancellationToken::new();
    let app = router_with_cut_off(&config, engine, cut_off.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    // Without TCP_NODELAY, Nagle's algorithm holds each small SSE event back
    // until the client's delayed ACK: ~40 ms on every first event.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // A dropped sender means the handle is gone: stop as well.
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningServer {
        local_addr,
        stop,
        cut_off,
        task,
    })
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, lets open responses finish for a while, then cuts them off.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            // Ending the open responses lets their connections, and then the
            // server, finish; aborting the task alone would leave them running.
            self.cut_off.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// Serves in the foreground until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn serve_until_signal(config: Config, engine: Engine) -> std::io::Result<()> {
    let server = spawn(config, engine).await?;
    tracing::info!(address = %server.local_addr(), "reference server ready");
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
