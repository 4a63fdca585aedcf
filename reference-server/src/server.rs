//! Binding, serving in a task, and stopping.
//!
//! We serve connections with hyper's HTTP/1 builder ourselves rather than with
//! `axum::serve`, which has no timer: with one, hyper closes a connection that
//! has not sent a complete request head within `header_read_timeout` (an idle
//! connection, fresh or kept alive, and a slowloris header alike).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mock_engine::Engine;
use tokio::net::{TcpListener, TcpStream};
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
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let task = tokio::spawn(accept_loop(listener, app, http, async {
        // A dropped sender means the handle is gone: stop as well.
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        local_addr,
        stop,
        cut_off,
        task,
    })
}

/// Accepts until `stop`, then lets every open connection finish its
/// responses (see [`RunningServer::shutdown`] for the limit on that).
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    http: http1::Builder,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    wait_after_accept_error(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let connection = http.serve_connection(
            TokioIo::new(nodelay(tcp)),
            TowerToHyperService::new(app.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and clients that go away end up here: not our error.
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Without TCP_NODELAY, Nagle's algorithm holds each small SSE event back
/// until the client's delayed ACK: ~40 ms on every first event.
fn nodelay(tcp: TcpStream) -> TcpStream {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!("cannot set TCP_NODELAY: {e}");
    }
    tcp
}

/// A failed accept is about one connection, except when the process is out of
/// file descriptors (EMFILE): then accepting again at once would spin, so wait
/// for connections to close (as hyper 0.14 and axum do).
async fn wait_after_accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::error!("accept error: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
