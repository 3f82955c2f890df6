//! The RLM engine: turns a task and its context into model turns, runs the
//! model's code in the sandbox REPL and decides when the run is finished.
//! For now it holds the two pure building blocks — [`parse`] (reading the
//! model's answer: code blocks and a text-level `FINAL`) and [`prompt`] (what
//! the model sees: system prompt, first message, observations); the loop itself
//! lands later.

pub mod parse;
pub mod prompt;
