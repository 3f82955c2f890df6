//! Sessions: the REPL driver's protocol and live session processes.

pub mod launcher;
pub mod limits;
pub mod manager;
pub mod pool;
pub mod process;
pub mod protocol;
