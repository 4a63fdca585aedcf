//! SIGINT (Ctrl-C) and SIGTERM (what CI systems send to cancel a job), as
//! values a command can wait for.
//!
//! The first one asks a command to stop sending, stop its targets and write
//! what it has; a second one gives up on that (every process the harness
//! started is still killed when its handle drops).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let interrupts = harness::interrupt::Interrupts::listen()?;
//! let first = interrupts.nth(1).await;
//! eprintln!("interrupted by {first}; exiting with {}", first.exit_code());
//! # Ok(()) }
//! ```

use std::fmt;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A signal that asks the harness to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Sigint,
    Sigterm,
}

impl Interrupt {
    /// The shell's convention: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Sigint => 130,
            Self::Sigterm => 143,
        }
    }
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sigint => "SIGINT",
            Self::Sigterm => "SIGTERM",
        })
    }
}

/// The interrupts received so far, in order.
#[derive(Debug, Clone)]
pub struct Interrupts {
    received: watch::Receiver<Vec<Interrupt>>,
}

impl Interrupts {
    /// Installs the handlers (which replace the default of dying at once)
    /// and starts counting; must be called inside a tokio runtime.
    pub fn listen() -> std::io::Result<Self> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let (tx, received) = watch::channel(Vec::new());
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = sigint.recv() => Interrupt::Sigint,
                    Some(()) = sigterm.recv() => Interrupt::Sigterm,
                    else => return,
                };
                tx.send_modify(|all| all.push(signal));
            }
        });
        Ok(Self { received })
    }

    /// Resolves when the `n`th interrupt (from 1) has arrived, with it;
    /// never, if the listener has stopped.
    pub async fn nth(&self, n: usize) -> Interrupt {
        let mut received = self.received.clone();
        match received.wait_for(|all| all.len() >= n).await {
            Ok(all) => all[n - 1],
            Err(_) => std::future::pending().await,
        }
    }

    /// The first interrupt, if one has arrived.
    pub fn first(&self) -> Option<Interrupt> {
        self.received.borrow().first().copied()
    }
}
