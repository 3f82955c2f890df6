//! A live REPL process and one cell's execution on it: the EXEC frame out, the
//! session's stdout/stderr and sub-call requests in, answers and interrupts
//! forwarded, DONE (or death) ending it. All reads are readiness-based with
//! our own buffers, so every `select!` branch is cancel-safe.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::protocol::{self, Done, Exec, FromDriver, Ready, Subcall, SubcallAnswer};
use crate::isolation::spawn::Spawned;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("session process I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("session broke the protocol: {0}")]
    Protocol(#[from] protocol::FrameError),
    #[error("session process exited")]
    Exited,
    #[error("session sent {0} where READY was expected")]
    Unexpected(&'static str),
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a running cell produces, in order.
#[derive(Debug)]
pub enum CellEvent {
    Output(Stream, Vec<u8>),
    Subcall(Subcall),
}

/// What the caller feeds a running cell.
#[derive(Debug)]
pub enum CellInput {
    Answer(SubcallAnswer),
    Interrupt,
}

#[derive(Debug, Clone)]
pub struct CellLimits {
    /// Run time excluding time spent waiting for sub-call answers.
    pub timeout: Duration,
    /// After SIGINT, how long before SIGKILL.
    pub grace: Duration,
    /// Output bytes forwarded per cell; the rest is read and discarded.
    pub output_cap: u64,
}

/// How a cell ended.
#[derive(Debug, Default)]
pub struct CellOutcome {
    /// DONE as the driver sent it; `None` when the process died first.
    pub done: Option<Done>,
    pub timed_out: bool,
    pub interrupted: bool,
    pub truncated: bool,
    pub output_bytes: u64,
    pub subcalls: u32,
    pub wall: Duration,
    /// Set when the session can no longer be used, with why.
    pub ended: Option<Ended>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Killed after ignoring the interrupt past the grace period.
    TimeoutKilled,
    /// The process went away (crash, OOM kill — the caller tells which).
    Exited,
    /// It sent something that is not the protocol.
    ProtocolViolation(String),
    /// The caller stopped listening mid-cell.
    Abandoned,
}

const READ_CHUNK: usize = 64 * 1024;

pub struct SessionProcess {
    pub pid: i32,
    control: UnixStream,
    pending: Vec<u8>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    /// Read buffers, allocated once per session rather than per cell.
    out_buf: Vec<u8>,
    err_buf: Vec<u8>,
}

impl SessionProcess {
    /// Wraps a freshly spawned process (must be called inside the runtime).
    pub fn new(spawned: Spawned) -> Result<Self, ProcessError> {
        let control = std::os::unix::net::UnixStream::from(spawned.control);
        control.set_nonblocking(true)?;
        Ok(Self {
            pid: spawned.pid,
            control: UnixStream::from_std(control)?,
            pending: Vec::new(),
            stdout: pipe::Receiver::from_owned_fd(spawned.stdout)?,
            stderr: pipe::Receiver::from_owned_fd(spawned.stderr)?,
            out_buf: vec![0; READ_CHUNK],
            err_buf: vec![0; READ_CHUNK],
        })
    }

    /// Waits for the driver's READY.
    pub async fn ready(&mut self) -> Result<Ready, ProcessError> {
        match next_frame(&mut self.control, &mut self.pending).await? {
            Some(FromDriver::Ready(ready)) => Ok(ready),
            Some(FromDriver::Done(_)) => Err(ProcessError::Unexpected("DONE")),
            Some(FromDriver::Subcall(_)) => Err(ProcessError::Unexpected("SUBCALL")),
            None => Err(ProcessError::Exited),
        }
    }

    /// Hands the driver its contexts as open read-only files (SCM_RIGHTS).
    pub async fn attach_contexts(&mut self, files: &[OwnedFd]) -> Result<(), ProcessError> {
        let frame = protocol::encode(b'C', &protocol::Contexts { count: files.len() });
        let raw: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        let mut sent = 0;
        while sent == 0 {
            self.control.writable().await?;
            let result = self.control.try_io(tokio::io::Interest::WRITABLE, || {
                let control = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
                let iov = [std::io::IoSlice::new(&frame)];
                let cmsgs: &[nix::sys::socket::ControlMessage] =
                    if raw.is_empty() { &[] } else { &control };
                nix::sys::socket::sendmsg::<()>(
                    self.control.as_raw_fd(),
                    &iov,
                    cmsgs,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match result {
                Ok(n) => sent = n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err.into()),
            }
        }
        if sent < frame.len() {
            self.control.write_all(&frame[sent..]).await?;
        }
        Ok(())
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal);
    }

    /// Runs one cell. Events go to `events`; answers and interrupts come from `inputs`.
    pub async fn execute(
        &mut self,
        code: &str,
        limits: &CellLimits,
        events: &mpsc::Sender<CellEvent>,
        inputs: &mut mpsc::Receiver<CellInput>,
    ) -> CellOutcome {
        let started = Instant::now();
        let mut outcome = CellOutcome::default();
        // Output from earlier (a background thread, say) is not this cell's.
        drain_now(&mut self.stdout);
        drain_now(&mut self.stderr);

        let exec = protocol::encode(b'E', &Exec { code });
        if self.control.write_all(&exec).await.is_err() {
            outcome.ended = Some(Ended::Exited);
            outcome.wall = started.elapsed();
            return outcome;
        }

        let mut cell = Cell {
            outcome,
            limits,
            remaining: limits.timeout,
            running_since: Some(Instant::now()),
            outstanding: HashSet::new(),
            kill_at: None,
            inputs_open: true,
        };
        // Taken for the cell and put back at its end (one allocation per session).
        let mut out_buf = std::mem::take(&mut self.out_buf);
        let mut err_buf = std::mem::take(&mut self.err_buf);
        let (mut stdout_open, mut stderr_open) = (true, true);
        loop {
            let deadline = cell.next_deadline();
            tokio::select! {
                frame = next_frame(&mut self.control, &mut self.pending) => match frame {
                    Ok(Some(FromDriver::Done(done))) => {
                        cell.outcome.interrupted |= done.interrupted;
                        cell.outcome.done = Some(done);
                        break;
                    }
                    Ok(Some(FromDriver::Subcall(subcall))) => {
                        cell.pause(subcall.id);
                        cell.outcome.subcalls += 1;
                        if events.send(CellEvent::Subcall(subcall)).await.is_err() {
                            cell.outcome.ended = Some(Ended::Abandoned);
                            break;
                        }
                    }
                    Ok(Some(FromDriver::Ready(_))) => {
                        cell.outcome.ended = Some(Ended::ProtocolViolation("READY during a cell".into()));
                        break;
                    }
                    Ok(None) | Err(ProcessError::Io(_)) => {
                        cell.outcome.ended = Some(Ended::Exited);
                        break;
                    }
                    Err(err) => {
                        cell.outcome.ended = Some(Ended::ProtocolViolation(err.to_string()));
                        break;
                    }
                },
                read = read_some(&mut self.stdout, &mut out_buf), if stdout_open => match read {
                    Ok(0) | Err(_) => stdout_open = false,
                    Ok(n) => if !cell.forward(events, Stream::Stdout, &out_buf[..n]).await { break },
                },
                read = read_some(&mut self.stderr, &mut err_buf), if stderr_open => match read {
                    Ok(0) | Err(_) => stderr_open = false,
                    Ok(n) => if !cell.forward(events, Stream::Stderr, &err_buf[..n]).await { break },
                },
                input = inputs.recv(), if cell.inputs_open => match input {
                    Some(CellInput::Answer(answer)) => {
                        cell.resume(answer.id);
                        let frame = protocol::encode(b'A', &answer);
                        if self.control.write_all(&frame).await.is_err() {
                            cell.outcome.ended = Some(Ended::Exited);
                            break;
                        }
                    }
                    Some(CellInput::Interrupt) => self.interrupt(&mut cell),
                    None => cell.inputs_open = false,
                },
                () = sleep_until(deadline) => {
                    if cell.kill_at.is_some() {
                        self.signal(nix::sys::signal::Signal::SIGKILL);
                        cell.outcome.ended = Some(Ended::TimeoutKilled);
                        break;
                    }
                    cell.outcome.timed_out = true;
                    self.interrupt(&mut cell);
                }
            }
        }
        if cell.outcome.done.is_some() {
            // Everything printed before DONE is already in the pipes; read it
            // now, whether or not the runtime has seen them become readable.
            for (pipe, stream, buf) in [
                (&self.stdout, Stream::Stdout, &mut out_buf),
                (&self.stderr, Stream::Stderr, &mut err_buf),
            ] {
                while let Ok(n) = read_now(pipe, buf) {
                    if n == 0 || !cell.forward(events, stream, &buf[..n]).await {
                        break;
                    }
                }
            }
        }
        self.out_buf = out_buf;
        self.err_buf = err_buf;
        cell.outcome.wall = started.elapsed();
        cell.outcome
    }

    fn interrupt(&self, cell: &mut Cell<'_>) {
        if cell.kill_at.is_none() {
            self.signal(nix::sys::signal::Signal::SIGINT);
            cell.kill_at = Some(Instant::now() + cell.limits.grace);
        }
    }
}

struct Cell<'a> {
    outcome: CellOutcome,
    limits: &'a CellLimits,
    /// Timeout budget left, excluding time blocked on sub-calls.
    remaining: Duration,
    running_since: Option<Instant>,
    outstanding: HashSet<u64>,
    kill_at: Option<Instant>,
    inputs_open: bool,
}

impl Cell<'_> {
    fn next_deadline(&self) -> Option<Instant> {
        if let Some(kill_at) = self.kill_at {
            return Some(kill_at);
        }
        if self.outcome.timed_out {
            return None;
        }
        self.running_since.map(|since| since + self.remaining)
    }

    fn pause(&mut self, id: u64) {
        if let Some(since) = self.running_since.take() {
            self.remaining = self.remaining.saturating_sub(since.elapsed());
        }
        self.outstanding.insert(id);
    }

    fn resume(&mut self, id: u64) {
        self.outstanding.remove(&id);
        if self.outstanding.is_empty() && self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
    }

    /// Forwards output up to the cap; false when the caller has gone away.
    async fn forward(
        &mut self,
        events: &mpsc::Sender<CellEvent>,
        stream: Stream,
        bytes: &[u8],
    ) -> bool {
        let before = self.outcome.output_bytes;
        self.outcome.output_bytes += bytes.len() as u64;
        if before >= self.limits.output_cap {
            self.outcome.truncated = true;
            return true;
        }
        let allowed = (self.limits.output_cap - before).min(bytes.len() as u64) as usize;
        if allowed < bytes.len() {
            self.outcome.truncated = true;
        }
        if events
            .send(CellEvent::Output(stream, bytes[..allowed].to_vec()))
            .await
            .is_err()
        {
            self.outcome.ended = Some(Ended::Abandoned);
            return false;
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads what is available (cancel-safe: nothing is lost if dropped while waiting).
async fn read_some(pipe: &mut pipe::Receiver, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        pipe.readable().await?;
        match pipe.try_read(buf) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// A read(2) on the (non-blocking) pipe, bypassing the runtime's readiness
/// cache, which may not have caught up with data already in the pipe.
fn read_now(pipe: &pipe::Receiver, buf: &mut [u8]) -> std::io::Result<usize> {
    nix::unistd::read(pipe, buf).map_err(std::io::Error::from)
}

fn drain_now(pipe: &mut pipe::Receiver) {
    let mut scratch = [0u8; 4096];
    while matches!(read_now(pipe, &mut scratch), Ok(n) if n > 0) {}
}

/// The next frame from the driver, `None` at end of stream. Cancel-safe: bytes
/// read so far stay in `pending`.
async fn next_frame(
    control: &mut UnixStream,
    pending: &mut Vec<u8>,
) -> Result<Option<FromDriver>, ProcessError> {
    loop {
        if pending.len() >= 4 {
            let length =
                protocol::payload_length([pending[0], pending[1], pending[2], pending[3]])?;
            if pending.len() >= 4 + length {
                let frame = protocol::decode(&pending[4..4 + length]);
                pending.drain(..4 + length);
                return Ok(Some(frame?));
            }
            pending.reserve(4 + length - pending.len());
        } else {
            pending.reserve(READ_CHUNK);
        }
        control.readable().await?;
        match control.try_read_buf(pending) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err.into()),
        }
    }
}
